//! The xorb format: chunk records, builder, parser and storage footer.
