//! Pictures: loss curves, attention maps, line charts of several series.

pub mod attention_map;
pub mod lines;
pub mod loss_curve;
