//! Name and picture formats (`name_format = "{username} ({room})"`,
//! `icon_url = "https://avatars.example/{user_id}.png"`): checked once when the config is read,
//! filled in per event.

use std::fmt::Write as _;

/// The placeholders a format may use.
pub const PLACEHOLDERS: [&str; 4] = ["username", "user_id", "room", "origin"];

/// What a format is filled with: one event's sender, where it happened, where it came from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fields<'a> {
    /// The sender's chat name (`username`), or empty when the event has none.
    pub username: &'a str,
    /// The sender's id as written (`1001`, `u-7`).
    pub user_id: &'a str,
    /// The room, or `dm` for a direct message.
    pub room: &'a str,
    /// The link the event entered through, or empty when it was written in the chat itself.
    pub origin: &'a str,
}

/// One piece of a parsed format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(usize),
}

/// A parsed format. For URL formats, every filled-in value is percent-encoded so a user name
/// cannot change the URL's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The format as written, for messages.
    source: String,
    pieces: Vec<Piece>,
    /// Percent-encode values (picture URLs).
    url: bool,
}

impl Template {
    /// Parses a text format. `{{` and `}}` write literal braces; an unknown placeholder or an
    /// unclosed brace is an error naming it.
    pub fn text(source: &str) -> Result<Self, String> {
        Self::parse(source, false)
    }

    /// Parses a picture URL format; the result must be an `http(s)` URL.
    pub fn url(source: &str) -> Result<Self, String> {
        let template = Self::parse(source, true)?;
        let sample = template.render(&Fields {
            username: "alice",
            user_id: "1001",
            room: "general",
            origin: "",
        });
        crate::secret::SecretUrl::parse(&sample)?;
        Ok(template)
    }

    fn parse(source: &str, url: bool) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("unclosed `{{{name}`")),
                        }
                    }
                    let index = PLACEHOLDERS
                        .iter()
                        .position(|p| *p == name)
                        .ok_or_else(|| {
                            format!(
                                "unknown placeholder `{{{name}}}` (expected {})",
                                PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                            )
                        })?;
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Field(index));
                }
                '}' => return Err("a lone `}` (write `}}` for a brace)".into()),
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Self {
            source: source.to_owned(),
            pieces,
            url,
        })
    }

    /// The format as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the format shows `{origin}` itself (else the renderer adds it).
    pub fn uses_origin(&self) -> bool {
        self.pieces.contains(&Piece::Field(3))
    }

    /// Fills the format in.
    pub fn render(&self, fields: &Fields<'_>) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Field(index) => {
                    let value = match index {
                        0 => fields.username,
                        1 => fields.user_id,
                        2 => fields.room,
                        _ => fields.origin,
                    };
                    if self.url {
                        percent_encode(value, &mut out);
                    } else {
                        out.push_str(value);
                    }
                }
            }
        }
        out
    }
}

/// Appends `value` with everything but RFC 3986 unreserved characters percent-encoded.
fn percent_encode(value: &str, out: &mut String) {
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: Fields<'static> = Fields {
        username: "alice",
        user_id: "1001",
        room: "general",
        origin: "slack",
    };

    #[test]
    fn fills_placeholders_and_literal_braces() {
        let t = Template::text("{username} ({room}) {{x}} via {origin}").unwrap();
        assert_eq!(t.render(&FIELDS), "alice (general) {x} via slack");
        assert!(t.uses_origin());
        assert!(!Template::text("{username}").unwrap().uses_origin());
    }

    #[test]
    fn rejects_unknown_placeholders_and_lone_braces() {
        let err = Template::text("{name}").unwrap_err();
        assert!(err.contains("`{name}`"), "{err}");
        assert!(Template::text("a } b").is_err());
        assert!(Template::text("{username").is_err());
    }

    #[test]
    fn url_values_are_percent_encoded() {
        let t = Template::url("https://avatars.example/{user_id}.png?n={username}").unwrap();
        let fields = Fields {
            username: "a b/../&x=1",
            user_id: "../../admin",
            ..FIELDS
        };
        assert_eq!(
            t.render(&fields),
            "https://avatars.example/..%2F..%2Fadmin.png?n=a%20b%2F..%2F%26x%3D1"
        );
        assert!(Template::url("not a url {user_id}").is_err());
    }
}
