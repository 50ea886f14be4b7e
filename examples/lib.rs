//! Runnable examples for agent-pipeline live beside this file; see `hello_earthling.rs`.
