//! stack (in progress)
