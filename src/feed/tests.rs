use super::*;
use crate::store::changes::Position;
use crate::version::{Actor, Context};

fn cursor() -> Cursor {
    let at = Position {
        life: 2,
        id: 7,
        seq: 41,
    };
    Cursor {
        since_ms: 1_000,
        marks: BTreeMap::from([
            ("n1".to_string(), Mark::After(at)),
            ("n2".to_string(), Mark::Since(900)),
        ]),
    }
}

#[test]
fn a_cursor_round_trips_only_through_its_own_cluster_unchanged() {
    let seal = Seal::new("prod", Some(b"secret of thirty-two bytes or so"));
    let text = cursor().encode(&seal);
    assert_eq!(Cursor::decode(&text, &seal), Ok(cursor()));
    let other = Seal::new("staging", Some(b"secret of thirty-two bytes or so"));
    assert!(Cursor::decode(&text, &other).is_err_and(|e| e.contains("another cluster")));
    let resealed = Seal::new("prod", Some(b"another secret of thirty-two byt"));
    assert!(Cursor::decode(&text, &resealed).is_err_and(|e| e.contains("seal")));
    // Every single changed character is refused.
    for i in 0..text.len() {
        let mut bytes = text.clone().into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(bytes).expect("ascii");
        assert!(Cursor::decode(&changed, &seal).is_err(), "changed at {i}");
    }
    // A key's context is not a cursor, nor the reverse.
    let context = Context::default().encode(&seal, "k");
    assert!(Cursor::decode(&context, &seal).is_err_and(|e| e.contains("not a cursor")));
    assert!(Context::decode(&text, &seal, "k").is_err());
}

fn entry(key: &str, dots: &[(&str, u64)], at_ms: u64) -> Logged {
    let dots: Vec<Dot> = dots
        .iter()
        .map(|(node, counter)| Dot::new(Actor::new(*node, 1), *counter))
        .collect();
    let mut context = VersionVector::default();
    for dot in &dots {
        crdts::CmRDT::apply(&mut context, dot.clone());
    }
    Logged {
        at_ms,
        key: key.into(),
        dots,
        deleted: false,
        context,
    }
}

#[test]
fn a_page_keeps_one_change_per_write_however_many_replicas_logged_it() {
    let mut page = Page::default();
    // Three replicas log the write n1:1 of `a`; one of them had missed
    // n2:1 too, and logs both at once.
    page.add(entry("a", &[("n1", 1)], 20));
    page.add(entry("a", &[("n1", 1)], 21));
    page.add(entry("b", &[("n1", 2)], 10));
    page.add(entry("a", &[("n2", 1), ("n1", 1)], 22));
    page.add(entry("a", &[("n2", 1)], 23));
    let changes = page.into_changes();
    let keys: Vec<_> = changes.iter().map(|c| (c.key.as_str(), c.at_ms)).collect();
    assert_eq!(keys, [("b", 10), ("a", 20), ("a", 22)], "oldest first");
    // Duplicates join their contexts into the change they repeat.
    let joined = &changes[2].context;
    assert_eq!(joined.get(&Actor::new("n2", 1)), 1);
    assert_eq!(joined.get(&Actor::new("n1", 1)), 1);
}
