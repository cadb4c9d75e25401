//! Generates the node-to-node gRPC service without protoc: messages are Rust types carried
//! by a bincode codec (see src/codec.rs).
use tonic_build::manual::{Builder, Method, Service};

fn unary(name: &str, route: &str, input: &str, output: &str) -> Method {
    Method::builder()
        .name(name)
        .route_name(route)
        .input_type(input)
        .output_type(output)
        .codec_path("crate::codec::BincodeCodec")
        .build()
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let service = Service::builder()
        .name("Raft")
        .package("basalt.raft")
        .method(unary(
            "vote",
            "Vote",
            "crate::rpc::VoteReq",
            "crate::rpc::VoteReply",
        ))
        .method(unary(
            "append",
            "Append",
            "crate::rpc::AppendReq",
            "crate::rpc::AppendReply",
        ))
        .method(unary(
            "snapshot",
            "Snapshot",
            "crate::rpc::SnapshotReq",
            "crate::rpc::SnapshotReply",
        ))
        .method(unary(
            "forward",
            "Forward",
            "crate::rpc::ForwardReq",
            "crate::rpc::ForwardReply",
        ))
        .method(unary(
            "read_index",
            "ReadIndex",
            "crate::rpc::ReadIndexReq",
            "crate::rpc::ReadIndexReply",
        ))
        .method(unary(
            "digest",
            "Digest",
            "crate::rpc::DigestReq",
            "crate::rpc::DigestReply",
        ))
        .method(unary(
            "ping",
            "Ping",
            "crate::rpc::PingReq",
            "crate::rpc::PingReply",
        ))
        .method(unary(
            "announce",
            "Announce",
            "crate::rpc::JoinReq",
            "crate::rpc::MembershipReply",
        ))
        .method(unary(
            "join",
            "Join",
            "crate::rpc::JoinReq",
            "crate::rpc::MembershipReply",
        ))
        .method(unary(
            "remove",
            "Remove",
            "crate::rpc::RemoveReq",
            "crate::rpc::MembershipReply",
        ))
        .build();
    Builder::new().compile(&[service]);
}
