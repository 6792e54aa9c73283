//! Pictures: loss curves.

pub mod loss_curve;
