//! The HTML pages, rendered on the server with maud. Each page reads what its JSON twin in
//! [`super::api`] returns (the [`crate::views`]) and renders it for people.

mod control;
mod diff;
mod dlq;
mod home;
mod layout;
mod login;
mod not_found;
mod reports;
mod repository;
mod spend;
mod task;
mod tasks;
mod variant;

pub(crate) use control::{approve, cancel, reject};
pub(crate) use diff::diff;
pub(crate) use dlq::{dlq, redrive};
pub(crate) use home::{enqueue, home};
pub(crate) use login::{login, login_page};
pub(crate) use not_found::not_found;
pub(crate) use reports::reports;
pub(crate) use task::{replay, task};
pub(crate) use tasks::tasks;
