//! Serializing a [`Shard`], with or without footer.

use std::borrow::Cow;

use super::format::{FileInfo, FooterOptions, Shard, XorbInfo, sha256_to_stored};
use super::lookup::LookupTables;
use super::{
    BOOKEND_HASH, FOOTER_SIZE, FOOTER_VERSION, HEADER_SIZE, HEADER_TAG, HEADER_VERSION, RECORD_SIZE,
};
use crate::error::{Error, Result};
use crate::hash::MerkleHash;

/// Appends one 48-byte record: a hash and four u32 words.
#[inline]
fn put_record(out: &mut Vec<u8>, hash: &MerkleHash, words: [u32; 4]) {
    out.extend_from_slice(&hash.0);
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
}

fn put_header(out: &mut Vec<u8>, footer_size: u64) {
    out.extend_from_slice(&HEADER_TAG);
    out.extend_from_slice(&HEADER_VERSION.to_le_bytes());
    out.extend_from_slice(&footer_size.to_le_bytes());
}

fn count_u32(n: usize, what: impl FnOnce() -> String) -> Result<u32> {
    u32::try_from(n).map_err(|_| {
        Error::MalformedShard(format!("{}: {n} entries do not fit a u32 count", what()))
    })
}

fn put_file(out: &mut Vec<u8>, fi: usize, f: &FileInfo) -> Result<()> {
    if f.file_hash == BOOKEND_HASH {
        return Err(Error::MalformedShard(format!(
            "file {fi}: its hash is the bookend pattern (all 0xFF) and would end the section"
        )));
    }
    let n = count_u32(f.terms.len(), || format!("file {fi}"))?;
    if let Some(v) = &f.verification
        && v.len() != f.terms.len()
    {
        return Err(Error::MalformedShard(format!(
            "file {fi} ({}): {} verification entries for {} terms",
            f.file_hash,
            v.len(),
            f.terms.len()
        )));
    }
    put_record(out, &f.file_hash, [f.flags(), n, 0, 0]);
    for t in &f.terms {
        put_record(
            out,
            &t.xorb_hash,
            [0, t.unpacked_bytes, t.chunk_start, t.chunk_end],
        );
    }
    if let Some(v) = &f.verification {
        for h in v {
            put_record(out, h, [0; 4]);
        }
    }
    if let Some(sha) = &f.sha256 {
        put_record(out, &sha256_to_stored(sha), [0; 4]);
    }
    Ok(())
}

fn put_xorb(out: &mut Vec<u8>, xi: usize, x: &XorbInfo) -> Result<()> {
    if x.hash == BOOKEND_HASH {
        return Err(Error::MalformedShard(format!(
            "xorb {xi}: its hash is the bookend pattern (all 0xFF) and would end the section"
        )));
    }
    let n = count_u32(x.chunks.len(), || format!("xorb {xi}"))?;
    put_record(
        out,
        &x.hash,
        [0, n, x.num_bytes_in_xorb, x.num_bytes_on_disk],
    );
    for c in &x.chunks {
        put_record(
            out,
            &c.hash,
            [c.byte_range_start, c.unpacked_bytes, c.flags(), 0],
        );
    }
    Ok(())
}

impl Shard {
    /// Size of the shard's header, sections and bookends (everything but lookup tables and footer).
    pub fn serialized_len_without_footer(&self) -> usize {
        HEADER_SIZE
            + RECORD_SIZE * self.files.iter().map(FileInfo::num_records).sum::<usize>()
            + RECORD_SIZE
            + RECORD_SIZE * self.xorbs.iter().map(|x| 1 + x.chunks.len()).sum::<usize>()
            + RECORD_SIZE
    }

    /// Writes header, sections and bookends; returns the offset of the CAS-info section.
    fn write_sections(
        &self,
        out: &mut Vec<u8>,
        xorbs: &[XorbInfo],
        footer_size: u64,
    ) -> Result<usize> {
        put_header(out, footer_size);
        for (fi, f) in self.files.iter().enumerate() {
            put_file(out, fi, f)?;
        }
        put_record(out, &BOOKEND_HASH, [0; 4]);
        let xorb_info_offset = out.len();
        for (xi, x) in xorbs.iter().enumerate() {
            put_xorb(out, xi, x)?;
        }
        put_record(out, &BOOKEND_HASH, [0; 4]);
        Ok(xorb_info_offset)
    }

    /// The shard as hf_xet uploads it: header with `footer_size` 0, file-info section,
    /// bookend, CAS-info section, bookend, and nothing else.
    ///
    /// Fails only on a shard that cannot be written faithfully: a verification list
    /// whose length differs from the term count, a file or xorb hash equal to the
    /// bookend pattern, or more than `u32::MAX` entries in one block.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.serialized_len_without_footer());
        self.write_sections(&mut out, &self.xorbs, 0)?;
        Ok(out)
    }

    /// The shard with lookup tables and a version-1 footer, as a global-dedup query
    /// answers (the client requires both).
    ///
    /// With an HMAC key (and `chunk_hashes_already_keyed` false), every CAS-info
    /// chunk hash and chunk lookup key is `blake3::keyed_hash(key, raw hash)`. The
    /// footer's byte counters are computed from the content; timestamps come from
    /// `opts` (nothing here reads a clock). Fails as [`Shard::to_bytes`] does.
    pub fn to_bytes_with_footer(&self, opts: &FooterOptions) -> Result<Vec<u8>> {
        let key = opts.effective_key();
        let xorbs: Cow<'_, [XorbInfo]> = match key {
            Some(k) if !opts.chunk_hashes_already_keyed => Cow::Owned(
                self.xorbs
                    .iter()
                    .map(|x| {
                        let mut x = x.clone();
                        for c in &mut x.chunks {
                            c.hash = c.hash.hmac(&k);
                        }
                        x
                    })
                    .collect(),
            ),
            _ => Cow::Borrowed(&self.xorbs),
        };
        let tables = LookupTables::build(&self.files, &xorbs)?;

        let mut out = Vec::with_capacity(
            self.serialized_len_without_footer() + tables.byte_len() + FOOTER_SIZE,
        );
        let xorb_info_offset = self.write_sections(&mut out, &xorbs, FOOTER_SIZE as u64)?;

        let file_lookup_offset = out.len();
        for e in &tables.files {
            out.extend_from_slice(&e.key.to_le_bytes());
            out.extend_from_slice(&e.index.to_le_bytes());
        }
        let xorb_lookup_offset = out.len();
        for e in &tables.xorbs {
            out.extend_from_slice(&e.key.to_le_bytes());
            out.extend_from_slice(&e.index.to_le_bytes());
        }
        let chunk_lookup_offset = out.len();
        for e in &tables.chunks {
            out.extend_from_slice(&e.key.to_le_bytes());
            out.extend_from_slice(&e.xorb_index.to_le_bytes());
            out.extend_from_slice(&e.chunk_index.to_le_bytes());
        }
        let footer_offset = out.len();

        let words_before_key: [u64; 9] = [
            FOOTER_VERSION,
            HEADER_SIZE as u64,
            xorb_info_offset as u64,
            file_lookup_offset as u64,
            tables.files.len() as u64,
            xorb_lookup_offset as u64,
            tables.xorbs.len() as u64,
            chunk_lookup_offset as u64,
            tables.chunks.len() as u64,
        ];
        for w in words_before_key {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&key.unwrap_or(MerkleHash::ZERO).0);
        let words_after_key: [u64; 12] = [
            opts.creation_timestamp,
            opts.key_expiry,
            0,
            0,
            0,
            0,
            0,
            0,
            xorbs.iter().map(|x| u64::from(x.num_bytes_on_disk)).sum(),
            self.materialized_bytes(),
            xorbs.iter().map(|x| u64::from(x.num_bytes_in_xorb)).sum(),
            footer_offset as u64,
        ];
        for w in words_after_key {
            out.extend_from_slice(&w.to_le_bytes());
        }
        debug_assert_eq!(out.len(), footer_offset + FOOTER_SIZE);
        Ok(out)
    }
}
