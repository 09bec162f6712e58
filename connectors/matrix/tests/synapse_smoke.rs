use passerelle_testkit::matrix_client::MatrixUser;
use passerelle_testkit::synapse::Synapse;
use std::time::Duration;

#[tokio::test]
async fn smoke() {
    let t = std::time::Instant::now();
    let hs = Synapse::start(&[]);
    eprintln!("started in {:?}", t.elapsed());
    hs.register("alice", "alice-pw", false);
    hs.register("bob", "bob-pw", false);
    eprintln!("registered in {:?}", t.elapsed());
    let mut a = MatrixUser::login(&hs.url(), "alice", "alice-pw").await;
    let mut b = MatrixUser::login(&hs.url(), "bob", "bob-pw").await;
    let room = a.create_room(serde_json::json!({"invite": [b.user_id]})).await;
    b.join(&room).await;
    a.say(&room, "hello").await;
    let e = b.next_matching(Duration::from_secs(10), |e| e.kind() == "m.room.message").await;
    assert_eq!(e.unwrap().body(), "hello");
    eprintln!("done in {:?}", t.elapsed());
}
