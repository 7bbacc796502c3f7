//! The shard format: file reconstructions and xorb chunk lists.
