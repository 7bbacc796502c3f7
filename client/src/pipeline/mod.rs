//! The upload data pipeline: from chunked files to the xorbs and the shard
//! a client uploads. Pure and transport-free, so the HTTP and gRPC clients
//! share it and it is tested without a server.

mod session;

pub use session::{FileSummary, PipelineError, UploadPlan, UploadSession};
