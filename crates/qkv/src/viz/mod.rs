//! Pictures: loss curves, attention maps.

pub mod attention_map;
pub mod loss_curve;
