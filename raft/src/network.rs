//! The gRPC transport: an openraft network factory whose clients call peers' `Raft` service,
//! and the server side that hands incoming RPCs to the local Raft and node.

use crate::node::RaftNode;
use crate::pb::raft_client::RaftClient;
use crate::pb::raft_server::{Raft as RaftService, RaftServer};
use crate::rpc::{self, RemoteError};
use crate::{NodeInfo, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError as OrRemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use std::sync::Weak;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

pub const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// A lazily connecting client to a peer's gRPC address.
pub fn client(addr: &str, timeout: Duration) -> Option<RaftClient<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).ok()?;
    let channel = endpoint
        .connect_timeout(Duration::from_millis(500))
        .timeout(timeout)
        .tcp_nodelay(true)
        .connect_lazy();
    Some(
        RaftClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
    )
}

pub struct Network;

pub struct Conn {
    target: u64,
    client: Option<RaftClient<Channel>>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Conn;

    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> Conn {
        Conn {
            target,
            client: client(&node.grpc, Duration::from_secs(30)),
        }
    }
}

type RpcErr<E> = RPCError<u64, NodeInfo, RaftError<u64, E>>;

fn unreachable<E: std::error::Error>(e: impl std::fmt::Display) -> RpcErr<E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e.to_string())))
}

fn remote_network<E: std::error::Error>(e: RemoteError) -> RpcErr<E> {
    RPCError::Network(NetworkError::new(&e))
}

impl Conn {
    fn client(&self) -> Result<RaftClient<Channel>, Status> {
        self.client
            .clone()
            .ok_or_else(|| Status::unavailable("bad peer address"))
    }
}

fn with_ttl<T>(msg: T, option: &RPCOption) -> Request<T> {
    let mut req = Request::new(msg);
    req.set_timeout(option.hard_ttl());
    req
}

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcErr<openraft::error::Infallible>> {
        let mut c = self.client().map_err(unreachable)?;
        match c.append(with_ttl(rpc, &option)).await {
            Ok(r) => r.into_inner().map_err(remote_network),
            Err(s) => Err(unreachable(s)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RpcErr<InstallSnapshotError>> {
        let mut c = self.client().map_err(unreachable)?;
        match c.snapshot(with_ttl(rpc, &option)).await {
            Ok(r) => match r.into_inner() {
                Ok(resp) => Ok(resp),
                Err(RemoteError::SnapshotMismatch(m)) => {
                    Err(RPCError::RemoteError(OrRemoteError::new(
                        self.target,
                        RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m)),
                    )))
                }
                Err(e) => Err(remote_network(e)),
            },
            Err(s) => Err(unreachable(s)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RpcErr<openraft::error::Infallible>> {
        let mut c = self.client().map_err(unreachable)?;
        match c.vote(with_ttl(rpc, &option)).await {
            Ok(r) => r.into_inner().map_err(remote_network),
            Err(s) => Err(unreachable(s)),
        }
    }
}

/// Server side: RPCs from peers.
pub struct Service {
    pub raft: openraft::Raft<TypeConfig>,
    pub node: Weak<RaftNode>,
}

impl Service {
    fn node(&self) -> Result<std::sync::Arc<RaftNode>, Status> {
        self.node
            .upgrade()
            .ok_or_else(|| Status::unavailable("shutting down"))
    }
}

fn fatal(e: impl std::fmt::Display) -> RemoteError {
    RemoteError::Replication(crate::node::Unavailable::Raft(e.to_string()).into())
}

#[tonic::async_trait]
impl RaftService for Service {
    async fn vote(&self, req: Request<rpc::VoteReq>) -> Result<Response<rpc::VoteReply>, Status> {
        Ok(Response::new(
            self.raft.vote(req.into_inner()).await.map_err(fatal),
        ))
    }

    async fn append(
        &self,
        req: Request<rpc::AppendReq>,
    ) -> Result<Response<rpc::AppendReply>, Status> {
        Ok(Response::new(
            self.raft
                .append_entries(req.into_inner())
                .await
                .map_err(fatal),
        ))
    }

    async fn snapshot(
        &self,
        req: Request<rpc::SnapshotReq>,
    ) -> Result<Response<rpc::SnapshotReply>, Status> {
        let res = self
            .raft
            .install_snapshot(req.into_inner())
            .await
            .map_err(|e| match e {
                RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m)) => {
                    RemoteError::SnapshotMismatch(m)
                }
                other => fatal(other),
            });
        Ok(Response::new(res))
    }

    async fn forward(
        &self,
        req: Request<rpc::ForwardReq>,
    ) -> Result<Response<rpc::ForwardReply>, Status> {
        let node = self.node()?;
        Ok(Response::new(
            node.write_local(req.into_inner())
                .await
                .map_err(RemoteError::from),
        ))
    }

    async fn join(
        &self,
        req: Request<rpc::JoinReq>,
    ) -> Result<Response<rpc::MembershipReply>, Status> {
        let node = self.node()?;
        let (id, info) = req.into_inner();
        Ok(Response::new(
            node.add_member(id, info).await.map_err(RemoteError::from),
        ))
    }

    async fn remove(
        &self,
        req: Request<rpc::RemoveReq>,
    ) -> Result<Response<rpc::MembershipReply>, Status> {
        let node = self.node()?;
        Ok(Response::new(
            node.remove_member(req.into_inner())
                .await
                .map_err(RemoteError::from),
        ))
    }

    async fn announce(
        &self,
        req: Request<rpc::JoinReq>,
    ) -> Result<Response<rpc::MembershipReply>, Status> {
        let node = self.node()?;
        let (id, info) = req.into_inner();
        Ok(Response::new(
            node.update_member(id, info)
                .await
                .map_err(RemoteError::from),
        ))
    }

    async fn digest(
        &self,
        req: Request<rpc::DigestReq>,
    ) -> Result<Response<rpc::DigestReply>, Status> {
        let node = self.node()?;
        Ok(Response::new(
            node.wait_check(req.into_inner(), std::time::Duration::from_secs(30))
                .await
                .map_err(RemoteError::from),
        ))
    }

    async fn ping(&self, _req: Request<rpc::PingReq>) -> Result<Response<rpc::PingReply>, Status> {
        let node = self.node()?;
        Ok(Response::new((node.id, node.applied_index())))
    }

    async fn read_index(
        &self,
        _req: Request<rpc::ReadIndexReq>,
    ) -> Result<Response<rpc::ReadIndexReply>, Status> {
        let node = self.node()?;
        Ok(Response::new(
            node.read_index_local().await.map_err(RemoteError::from),
        ))
    }
}

pub fn server(svc: Service) -> RaftServer<Service> {
    RaftServer::new(svc)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}
