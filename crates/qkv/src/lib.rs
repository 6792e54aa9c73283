//! qkv: the transformer library.
