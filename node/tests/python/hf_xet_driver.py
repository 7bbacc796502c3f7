#!/usr/bin/env python3
"""Drives the real Xet client (hf_xet from PyPI) against a CAS endpoint.

Usage:
  hf_xet_driver.py upload ENDPOINT TOKEN FILE...
      Uploads the files; prints one JSON object per file: {"path", "hash", "size"}.
  hf_xet_driver.py download ENDPOINT TOKEN HASH SIZE OUT
      Downloads file HASH (SIZE bytes) to OUT.
  hf_xet_driver.py hash FILE...
      Prints the Xet file hash of each file (no server involved).

Exits non-zero with the client's error on stderr when an operation fails.
"""

import json
import sys
import time

import hf_xet

# Tokens handed to the client are valid for the whole run; no refresh is needed.
TOKEN_LIFETIME_S = 24 * 3600


def token_info(token):
    return (token, int(time.time()) + TOKEN_LIFETIME_S)


def upload(endpoint, token, paths):
    infos = hf_xet.upload_files(paths, endpoint, token_info(token), None, None, "model")
    for path, info in zip(paths, infos):
        print(json.dumps({"path": path, "hash": info.hash, "size": info.file_size}))


def download(endpoint, token, file_hash, size, out):
    info = hf_xet.PyXetDownloadInfo(out, file_hash, int(size))
    hf_xet.download_files([info], endpoint, token_info(token), None, None)


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd = argv[1]
    if cmd == "upload" and len(argv) >= 5:
        upload(argv[2], argv[3], argv[4:])
    elif cmd == "download" and len(argv) == 7:
        download(argv[2], argv[3], argv[4], argv[5], argv[6])
    elif cmd == "hash" and len(argv) >= 3:
        for path, info in zip(argv[2:], hf_xet.hash_files(argv[2:])):
            print(json.dumps({"path": path, "hash": info.hash, "size": info.file_size}))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
