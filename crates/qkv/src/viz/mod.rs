//! Pictures: loss curves, attention maps, confusion matrices, line charts of several series.

pub mod attention_map;
pub mod confusion;
pub mod lines;
pub mod loss_curve;
