//! The `sasl_passwd` parser of `mailstore::saslpass` never panics, and
//! every entry of a file it accepts can be looked up under the key it was
//! written with: a single-line file `KEY user:pass` with a bracketed,
//! ported key yields exactly that user and password.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailstore::saslpass::PasswordMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(map) = text.parse::<PasswordMap>() {
        // Lookups on arbitrary hosts never panic; a map with entries
        // prints no password in its Debug form (checked by the unit
        // tests; here only that it formats).
        let _ = format!("{map:?}");
        for line in text.lines() {
            if let Some(host) = line.split_whitespace().next() {
                let _ = map.lookup(host, 25);
            }
        }
        assert_eq!(map.is_empty(), map.len() == 0);
    }

    // A well-formed single entry comes back from lookup. Host and user
    // drawn from the input: host letters, user without blanks or ':'.
    let host: String = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
        .take(40)
        .collect::<String>()
        .trim_end_matches('.')
        .to_owned();
    let user: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':' && *c != '#')
        .take(20)
        .collect();
    if host.is_empty() || user.is_empty() {
        return;
    }
    let pass = format!("p#{user}:x");
    let file = format!("# comment\n[{host}]:587 {user}:{pass} # trailing\n");
    let Ok(map) = file.parse::<PasswordMap>() else {
        panic!("well-formed entry refused: {file:?}");
    };
    assert_eq!(map.len(), 1);
    let Some((u, p)) = map.lookup(&host.to_ascii_uppercase(), 587) else {
        panic!("entry not found for {host}");
    };
    assert_eq!(u, user);
    assert_eq!(p.expose().as_str(), pass);
    assert!(map.lookup(&host, 25).is_none());
});
