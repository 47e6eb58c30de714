pub mod logship;
pub mod rsyslog;
