//! Tuning: LoRA adapters ([`lora`]: PEFT files, merging) and the training loops that make the
//! model organisms ([`train`]: SFT and DPO).
//!
//! Both modules are re-exported at the crate root; this folder only groups them.

pub mod lora;
pub mod train;
