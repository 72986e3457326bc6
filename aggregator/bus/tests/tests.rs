//! The D-Bus layer's integration tests, one test binary: every file of this folder is a module here.

mod message_writer;
mod value_connection;
