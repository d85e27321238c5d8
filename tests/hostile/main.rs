//! Hostile files and interrupted runs: mutation fuzzing of every loader (`fuzz`), the CLI killed
//! with SIGKILL at seeded points and concurrent writers (`kill`). See RELIABILITY.md.

#[path = "../common_tiny/mod.rs"]
mod common_tiny;

mod alloc;
mod fuzz;
mod kill;
mod mutate;
mod seeds;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;
