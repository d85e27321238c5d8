//! Output: one-call reports ([`report`]) and the figures they draw ([`plot`], PNG and SVG).
//!
//! Both modules are re-exported at the crate root; this folder only groups them.

pub mod plot;
pub mod report;
