use super::*;
use crate::version::{Actor, Context};

const ALL: fn(&str) -> bool = |_| true;

fn limits() -> ReadLimits {
    ReadLimits {
        max_bytes: usize::MAX,
        max_scanned: usize::MAX,
        settle_ms: 0,
    }
}

fn entry(key: &str, at_ms: u64) -> Logged {
    Logged {
        at_ms,
        key: key.into(),
        dots: vec![Dot::new(Actor::new("n1", 7), at_ms)],
        deleted: false,
        context: VersionVector::default(),
    }
}

fn next(read: &Read) -> Mark {
    read.next
}

fn keys(read: &Read) -> Vec<&str> {
    read.entries.iter().map(|(_, e)| e.key.as_str()).collect()
}

/// A log on a real disk and a way to append to it as the committer does.
struct OnDisk {
    db: Database,
    log: ChangeLog,
}

impl OnDisk {
    fn open(dir: &std::path::Path) -> OnDisk {
        let db = Database::builder(dir).open().expect("open fjall");
        let log = ChangeLog::open(&db).expect("open the log");
        OnDisk { db, log }
    }

    fn append(&self, entry: Logged) {
        let mut batch = self.db.batch();
        let appended = self.log.append_to(&mut batch, entry).expect("append");
        batch.commit().expect("commit");
        self.log.committed(&[appended]);
    }
}

#[test]
fn a_write_logs_the_dots_it_brought_and_whether_they_delete() {
    let a = Actor::new("n1", 1);
    let mut set = SiblingSet::new();
    set.write(
        &Context::default(),
        Dot::new(a.clone(), 1),
        Content::Value("1".into()),
    );
    let first = logged("k", &[], &[], &set, 5).expect("a new key is a change");
    assert_eq!(first.dots, [Dot::new(a.clone(), 1)]);
    assert!(!first.deleted);
    // The same set merged again brings nothing.
    assert_eq!(logged("k", &dots_of(Some(&set)), &[], &set, 6), None);
    // Unless a node sent it: this replica then counts toward its quorum.
    let sent = dots_of(Some(&set));
    let again = logged("k", &sent, &sent, &set, 6).expect("a sent set is logged");
    assert_eq!(again.dots, sent);
    // A delete with the read's context: one fresh tombstone.
    let held = dots_of(Some(&set));
    let read = Context::read(set.context().clone());
    set.write(&read, Dot::new(a.clone(), 2), Content::Tombstone);
    let delete = logged("k", &held, &[], &set, 7).expect("a delete is a change");
    assert_eq!(delete.dots, [Dot::new(a, 2)]);
    assert!(delete.deleted);
    assert_eq!(&delete.context, set.context());
}

#[test]
fn a_reader_sees_each_entry_once_in_order_filtered_and_settled() {
    let log = ChangeLog::in_memory();
    let start = log.now();
    for (i, key) in ["a/1", "b/1", "a/2"].into_iter().enumerate() {
        log.append(entry(key, 100 + i as u64)).expect("append");
    }
    let read = log
        .read(
            Mark::After(start),
            &|k| k.starts_with("a/"),
            limits(),
            1_000,
        )
        .expect("read");
    assert_eq!(keys(&read), ["a/1", "a/2"]);
    assert!(!read.expired && !read.unsettled);
    assert_eq!(
        read.next,
        Mark::After(log.now()),
        "past the entry it skipped too"
    );
    let again = log.read(next(&read), &ALL, limits(), 1_000).expect("read");
    assert!(again.entries.is_empty());
    assert_eq!(again.next, read.next);

    // Entries younger than the settle time wait for a later read.
    log.append(entry("a/3", 990)).expect("append");
    let settle = ReadLimits {
        settle_ms: 50,
        ..limits()
    };
    let young = log.read(next(&read), &ALL, settle, 1_000).expect("read");
    assert!(young.entries.is_empty() && young.unsettled);
    assert_eq!(young.next, read.next);
    let settled = log.read(next(&read), &ALL, settle, 1_040).expect("read");
    assert_eq!(keys(&settled), ["a/3"]);
}

#[test]
fn a_read_stays_within_its_bytes_and_its_scan() {
    let log = ChangeLog::in_memory();
    let start = log.now();
    for i in 0..10 {
        log.append(entry(&format!("k{i}"), 1)).expect("append");
    }
    let one = ReadLimits {
        max_bytes: 1,
        ..limits()
    };
    let read = log.read(Mark::After(start), &ALL, one, 10).expect("read");
    assert_eq!(keys(&read), ["k0"], "one entry always, and no more");
    let scan = ReadLimits {
        max_scanned: 4,
        ..limits()
    };
    let read = log
        .read(Mark::After(start), &|k| k == "k9", scan, 10)
        .expect("read");
    assert!(read.entries.is_empty());
    let rest = log
        .read(next(&read), &|k| k == "k9", limits(), 10)
        .expect("read");
    assert_eq!(
        keys(&rest),
        ["k9"],
        "the next read goes on where it stopped"
    );
}

#[test]
fn a_reopened_log_begins_a_new_life_after_the_old_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (before, old_life) = {
        let disk = OnDisk::open(dir.path());
        let before = disk.log.now();
        disk.append(entry("a", 1));
        let mid = disk.log.now();
        disk.append(entry("b", 2));
        (before, mid)
    };
    let disk = OnDisk::open(dir.path());
    assert!(disk.log.now() > old_life);
    disk.append(entry("c", 3));
    let read = disk
        .log
        .read(Mark::After(old_life), &ALL, limits(), 10)
        .expect("read");
    assert_eq!(
        keys(&read),
        ["b", "c"],
        "the rest of the old life, then the new"
    );
    let all = disk
        .log
        .read(Mark::After(before), &ALL, limits(), 10)
        .expect("read");
    assert_eq!(keys(&all), ["a", "b", "c"]);
    assert_eq!(disk.log.size().0, 3);

    // A position of a life this disk never held (a restored or wiped
    // disk): everything retained, never a gap.
    let stranger = Position {
        life: old_life.life,
        id: old_life.id.wrapping_add(1),
        seq: 1_000,
    };
    let read = disk
        .log
        .read(Mark::After(stranger), &ALL, limits(), 10)
        .expect("read");
    assert_eq!(keys(&read), ["a", "b", "c"]);
}

#[test]
fn retention_drops_old_entries_and_expires_readers_behind_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = OnDisk::open(dir.path());
    let start = disk.log.now();
    for at in 1..=6 {
        disk.append(entry(&format!("k{at}"), at * 10));
    }
    let after_two = disk
        .log
        .read(Mark::After(start), &ALL, limits(), 100)
        .expect("read")
        .entries[1]
        .0;
    // By time: entries before 35 ms go.
    assert_eq!(disk.log.trim(35, u64::MAX, 100).expect("trim"), 3);
    let behind = disk
        .log
        .read(Mark::After(after_two), &ALL, limits(), 100)
        .expect("read");
    assert!(behind.expired);
    assert!(behind.entries.is_empty());
    assert_eq!(
        behind.next,
        Mark::After(disk.log.now()),
        "a fresh position to resume from"
    );
    // By bytes: the oldest go until the rest fit.
    let (_, bytes) = disk.log.size();
    assert_eq!(disk.log.trim(0, bytes - 1, 100).expect("trim"), 1);
    assert_eq!(disk.log.size().0, 2);
    drop(disk);
    // The floor outlives a restart.
    let disk = OnDisk::open(dir.path());
    assert!(
        disk.log
            .read(Mark::After(after_two), &ALL, limits(), 100)
            .expect("read")
            .expired
    );
    let live = disk
        .log
        .read(Mark::After(start), &ALL, limits(), 100)
        .expect("read");
    assert!(live.expired, "the very start is behind the floor too");
}

#[test]
fn the_in_memory_log_trims_as_the_disk_one_does() {
    let log = ChangeLog::in_memory();
    let start = log.now();
    for at in 1..=4 {
        log.append(entry("k", at)).expect("append");
    }
    assert_eq!(
        log.trim(3, u64::MAX, 1).expect("trim"),
        1,
        "at most max_entries"
    );
    assert_eq!(log.trim(3, u64::MAX, 100).expect("trim"), 1);
    assert!(
        log.read(Mark::After(start), &ALL, limits(), 10)
            .expect("read")
            .expired
    );
    assert_eq!(log.size().0, 2);
}

#[test]
fn a_reader_new_to_a_log_reads_from_a_time_and_expires_behind_its_floor() {
    let log = ChangeLog::in_memory();
    for at in [10, 20, 30, 40] {
        log.append(entry(&format!("k{at}"), at)).expect("append");
    }
    let read = log
        .read(Mark::Since(25), &ALL, limits(), 100)
        .expect("read");
    assert_eq!(keys(&read), ["k30", "k40"]);
    assert_eq!(read.next, Mark::After(log.now()));
    // Nothing read yet: the mark stays a time.
    let empty = ChangeLog::in_memory();
    let read = empty
        .read(Mark::Since(25), &ALL, limits(), 100)
        .expect("read");
    assert_eq!(read.next, Mark::Since(25));
    // Entries at or after the time were dropped: expired; before it: not.
    log.trim(21, u64::MAX, 100).expect("trim");
    assert!(
        log.read(Mark::Since(20), &ALL, limits(), 100)
            .expect("read")
            .expired
    );
    let read = log
        .read(Mark::Since(21), &ALL, limits(), 100)
        .expect("read");
    assert_eq!(keys(&read), ["k30", "k40"]);
}
