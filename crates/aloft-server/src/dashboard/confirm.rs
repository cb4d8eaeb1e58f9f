//! The confirmation page every change that affects devices shows first: what devices will get,
//! the form's fields carried along, and a button that posts them again with `confirmed=yes`.

use askama::Template;
use axum::response::Response;

use super::session::Signed;
use super::{Head, page};

#[derive(Template)]
#[template(path = "dashboard/confirm.html")]
pub(super) struct ConfirmPage {
    pub head: Head,
    pub lines: Vec<String>,
    pub action: String,
    pub csrf: String,
    pub fields: Vec<(String, String)>,
    pub button: String,
    pub back: String,
    pub danger: bool,
}

/// The page that says what an action will do to devices and asks to go ahead.
pub(super) struct Confirm<'a> {
    pub title: String,
    pub lines: Vec<String>,
    pub fields: Vec<(&'a str, String)>,
    pub button: &'a str,
    pub back: String,
    pub danger: bool,
}

impl Confirm<'_> {
    pub(super) fn render(self, signed: &Signed, action: &str) -> Response {
        page(&ConfirmPage {
            head: Head::new(self.title, Some(signed)),
            lines: self.lines,
            action: action.to_owned(),
            csrf: signed.session.csrf.clone(),
            fields: self.fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            button: self.button.to_owned(),
            back: self.back,
            danger: self.danger,
        })
    }
}

pub(super) fn confirmed(value: &Option<String>) -> bool {
    value.as_deref() == Some("yes")
}
