//! oomtrace's developer tasks, as a library: `cargo xtask` (src/main.rs) and the bench
//! (`bench/`, run by `cargo xtask bench`) share the setup, the build and the VM harness.

pub mod codegen;
pub mod deploy;
pub mod fuzz;
pub mod image;
pub mod prometheus;
pub mod run;
pub mod setup;
pub mod suite;
pub mod test;
pub mod vm;
