//! Benchmarks for agent-pipeline live beside this file; see `pipeline.rs`.
