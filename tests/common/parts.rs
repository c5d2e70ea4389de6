//! The parts of a long message as a chat platform received them, put back together: what a
//! test of splitting compares with the message sent.

/// Joins `parts` of one message that is a single code block opened by `reopen` (```` ```rust\n ````)
/// somewhere in the first part: checks that every part holds one whole block (each part but
/// the last closes it with `\n````, each but the first reopens it with `reopen`) and takes
/// those markers off. Each part must measure at most `limit` UTF-16 units.
pub fn rejoin_code_block(parts: &[String], reopen: &str, limit: usize) -> String {
    assert!(parts.len() >= 2, "one part: nothing was split");
    let mut whole = String::new();
    for (index, part) in parts.iter().enumerate() {
        assert!(part.encode_utf16().count() <= limit, "over {limit}: {part}");
        assert_eq!(part.matches("```").count(), 2, "one whole block: {part}");
        let mut part = part.as_str();
        if index > 0 {
            part = part.strip_prefix(reopen).expect("reopened with its tag");
        }
        if index + 1 < parts.len() {
            part = part.strip_suffix("\n```").expect("closed at the end");
        }
        whole.push_str(part);
    }
    whole
}
