//! Read positions of sources: what a drain's buffer records with every batch, and what is committed
//! once the drain acknowledged it.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One file of a glob source: identified by device and inode, so a rename keeps its position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePos {
    pub dev: u64,
    pub ino: u64,
    /// The last path it was seen at; after a rename the folder is searched for the inode.
    pub path: PathBuf,
    /// Just past the last record handed on (a record still being joined is not included).
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Checkpoint {
    Files { files: Vec<FilePos> },
    Journal { cursor: String },
}
