use super::*;
use serde::Deserialize;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Echo(String);

impl Rpc for Echo {
    const SERVICE: Service = Service::new("test.echo", 2);
    type Reply = Echo;
}

#[derive(Debug, Serialize, Deserialize)]
struct Fail;

impl Rpc for Fail {
    const SERVICE: Service = Service::new("test.fail", 1);
    type Reply = ();
}

fn services() -> Arc<Services> {
    let services = Services::new();
    services.register(|Echo(s): Echo| async move { Ok(Echo(s.to_uppercase())) });
    services.register_now(|_: Fail| Err(Error::TooManySiblings { count: 3, max: 2 }));
    services
}

#[tokio::test]
async fn a_call_is_answered_by_its_handler_locally_and_through_bytes() {
    let services = services();
    let local = services.local::<Echo>().expect("registered");
    assert_eq!(
        local(Echo("hi".into())).await.expect("local"),
        Echo("HI".into())
    );
    let frame = Frame::of(&Echo("hi".into())).expect("encode");
    assert_eq!(frame.header(), "test.echo/2");
    let bytes = services
        .dispatch(frame.service, frame.version, false, frame.body)
        .expect("dispatched")
        .await
        .expect("handled");
    assert_eq!(
        reply::<Echo>("n2", &bytes).expect("a reply"),
        Echo("HI".into())
    );
}

#[tokio::test]
async fn a_handlers_error_crosses_with_its_status_and_code() {
    let frame = Frame::of(&Fail).expect("encode");
    let bytes = services()
        .dispatch(frame.service, frame.version, false, frame.body)
        .expect("dispatched")
        .await
        .expect("a reply carrying the error");
    let e = reply::<Fail>("n2", &bytes).expect_err("the handler failed");
    assert_eq!(e.code(), "too_many_siblings");
    assert_eq!(e.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert!(e.to_string().contains("n2"), "{e}");
}

#[tokio::test]
async fn unknown_services_versions_and_bodies_are_refused_unapplied() {
    let services = services();
    let e = services
        .dispatch("test.nothing", 1, false, Bytes::new())
        .err()
        .expect("unknown");
    assert_eq!(e.code(), "unknown_service");
    let e = services
        .dispatch("test.echo", 1, false, Bytes::new())
        .err()
        .expect("old version");
    assert_eq!(e.code(), "unsupported_version");
    assert!(e.to_string().contains("speaks version 2"), "{e}");
    let e = services
        .dispatch("test.echo", 2, true, Bytes::new())
        .err()
        .expect("signed for anyone");
    assert_eq!(e.code(), "peer_unauthenticated");
    let e = services
        .dispatch("test.echo", 2, false, Bytes::from_static(&[0xff, 0xff]))
        .expect("known")
        .await
        .expect_err("garbage");
    assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
}

/// A message that protocol 2 changed: `Shout` v2 and its v1 form.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Shout(String, u8);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct ShoutV1(String);

impl Rpc for Shout {
    const SERVICE: Service = Service::new("test.shout", 2).since(2);
    type Reply = String;

    fn frame_for(&self, protocol: u16) -> Result<Frame> {
        if protocol >= 2 {
            return Frame::of(self);
        }
        Frame::of(&ShoutV1(self.0.clone()))
    }
}

impl Rpc for ShoutV1 {
    const SERVICE: Service = Service::new("test.shout", 1);
    type Reply = String;
}

fn shouting(protocol: u16) -> Arc<Services> {
    let services = Services::speaking(protocol);
    services.register_now(|Shout(s, n): Shout| Ok(s.to_uppercase().repeat(n.into())));
    services.register_now(|ShoutV1(s): ShoutV1| Ok(s.to_uppercase()));
    services
}

async fn call(services: &Services, frame: Frame) -> Result<String> {
    let bytes = services
        .dispatch(frame.service, frame.version, false, frame.body)?
        .await?;
    reply::<Shout>("n2", &bytes)
}

/// A node of protocol 2 answers both versions; a node of protocol 1
/// refuses the newer one with the version it speaks, and the older
/// form of the same request reaches it.
#[tokio::test]
async fn each_protocol_speaks_its_versions_and_a_request_steps_down() {
    let request = Shout("hi".into(), 2);
    let (new, old) = (shouting(2), shouting(1));
    let v2 = request.frame_for(2).expect("encode");
    assert_eq!(v2.header(), "test.shout/2");
    assert_eq!(call(&new, v2.clone()).await.expect("v2"), "HIHI");
    let e = call(&old, v2).await.expect_err("too new for it");
    assert_eq!(e.code(), "unsupported_version");
    assert!(e.to_string().contains("speaks version 1"), "{e}");
    let v1 = request.frame_for(1).expect("encode");
    assert_eq!(v1.header(), "test.shout/1");
    assert_eq!(call(&old, v1.clone()).await.expect("v1"), "HI");
    assert_eq!(call(&new, v1).await.expect("v1 still"), "HI");
    // Local calls carry no encoding: any registered version is fine.
    assert!(old.local::<Shout>().is_some());
    assert_eq!(new.names(), ["test.shout/1", "test.shout/2"]);
}

#[test]
fn the_header_is_parsed_strictly() {
    assert_eq!(
        parse_header(b"membership.gossip/1").expect("valid"),
        ("membership.gossip".to_string(), 1)
    );
    for bad in [
        &b"gossip"[..],
        b"/1",
        b"a b/1",
        b"x/y",
        b"x/70000",
        b"\xff/1",
        &[b'a'; 100],
    ] {
        assert!(parse_header(bad).is_err(), "{bad:?}");
    }
}
