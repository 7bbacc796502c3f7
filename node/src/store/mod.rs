//! Object storage: xorbs and shards in an S3 bucket.
