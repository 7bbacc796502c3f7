//! Test data and helpers shared by the differential tests and benchmarks that
//! compare `cas-core` with the Xet reference implementation.

pub mod datasets;
