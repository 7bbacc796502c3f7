//! Per-chunk compression schemes of the xorb format.
