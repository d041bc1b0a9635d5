//! Workspace-level tests live in `tests/tests/`. This library is empty on purpose: the
//! package exists so that tests spanning crates (and, later, multi-process scenarios
//! driven through devnet) have a home of their own.
