//! The gRPC transport: an openraft network factory whose clients call peers' `Raft` service,
//! and the server side that hands incoming RPCs to the local Raft and node.

use crate::node::RaftNode;
use crate::pb::raft_client::RaftClient;
use crate::pb::raft_server::{Raft as RaftService, RaftServer};
use crate::rpc::{self, RemoteError};
use crate::tls::{self, Transport};
use crate::{NodeInfo, TypeConfig};
use crate::{Refusal, ReplicationError};
use hyper_util::rt::TokioIo;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError,
    RemoteError as OrRemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{LogId, Vote};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::Weak;
use std::time::Duration;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

/// What tonic buffers of one message at most: the largest frame any method takes (an append).
/// Each method then has its own, smaller, cap (`rpc::Frame`).
pub const MAX_MESSAGE: usize = rpc::MAX_APPEND;

/// A lazily connecting client to a peer's gRPC address: over mutual TLS unless the cluster
/// runs `--insecure`; when `expect` names a node, the peer's certificate must name it.
pub fn client(
    addr: &str,
    timeout: Duration,
    transport: &Transport,
    expect: Option<u64>,
) -> Option<RaftClient<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .timeout(timeout)
        .tcp_nodelay(true);
    let channel = match transport {
        Transport::Insecure => endpoint.connect_lazy(),
        Transport::Tls(tls) => {
            let (tls, addr) = (tls.clone(), addr.to_string());
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let (tls, addr) = (tls.clone(), addr.clone());
                async move { tls.connect(&addr, expect).await.map(TokioIo::new) }
            }))
        }
    };
    Some(sized(channel))
}

fn sized(channel: Channel) -> RaftClient<Channel> {
    RaftClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// A client over a connection already made (a joiner's, to enroll).
pub(crate) async fn over<S>(stream: S) -> Result<RaftClient<Channel>, tonic::transport::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let slot = std::sync::Arc::new(Mutex::new(Some(stream)));
    let channel = Endpoint::from_static("http://enroll.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let stream = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            async move {
                stream
                    .map(TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("the enrollment connection is gone"))
            }
        }))
        .await?;
    Ok(sized(channel))
}

pub struct Network {
    pub transport: Transport,
    /// What this node's appends are stamped with while it leads (`crate::closed`).
    pub closed: std::sync::Arc<crate::closed::Closed>,
    /// One channel per peer and address, kept: openraft asks for a new client for every vote
    /// round and every leadership check (each linearizable read), and a new channel is a new
    /// TCP connection and TLS handshake (two round trips more across regions, which outlasted
    /// a vote's deadline at 150 ms). A channel reconnects by itself.
    pub channels: std::sync::Arc<Channels>,
}

/// Clients by peer id and address, each over one kept channel.
pub type Channels = Mutex<HashMap<(u64, String), RaftClient<Channel>>>;

pub struct Conn {
    target: u64,
    client: Option<RaftClient<Channel>>,
    closed: std::sync::Arc<crate::closed::Closed>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Conn;

    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> Conn {
        let key = (target, node.grpc.clone());
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let client = match channels.get(&key) {
            Some(c) => Some(c.clone()),
            None => {
                let c = client(
                    &node.grpc,
                    Duration::from_secs(30),
                    &self.transport,
                    Some(target),
                );
                if let Some(c) = &c {
                    channels.insert(key, c.clone());
                }
                c
            }
        };
        Conn {
            target,
            closed: self.closed.clone(),
            client,
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
        if crate::drill::isolated() {
            return Err(Status::unavailable(crate::drill::ISOLATED));
        }
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
        // A batch the receiver would refuse as too large goes as several smaller ones.
        let bytes = bincode::serialized_size(&rpc).unwrap_or(u64::MAX);
        if bytes > rpc::MAX_APPEND as u64 && rpc.entries.len() > 1 {
            let fewer = (rpc.entries.len() as u64 / 2).max(1);
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fewer),
            ));
        }
        let mut c = self.client().map_err(unreachable)?;
        let stamp = self.closed.stamp_for(rpc.vote.leader_id.term);
        let mut req = with_ttl(rpc, &option);
        if let Some(v) = stamp.and_then(|s| s.parse().ok()) {
            req.metadata_mut().insert(crate::closed::STAMP_HEADER, v);
        }
        match c.append(req).await {
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
    pub transport: Transport,
    /// The snapshot being received: its id and how many bytes have arrived.
    pub receiving: Mutex<Option<(String, u64)>>,
    /// Refusals already logged (by peer and method): each is logged once, not per retry.
    refused: Mutex<std::collections::HashSet<(String, &'static str)>>,
}

/// Who may call a method (with mutual TLS; `--insecure` clusters check nothing).
#[derive(Clone, Copy, Debug)]
enum Who {
    /// A current member (voter or learner). A node not yet in any membership (a joiner waiting
    /// for its first append) takes any node the cluster CA certified.
    Member,
    /// A member acting as node `id` (a candidate's vote, a leader's append): its certificate
    /// must name that node.
    MemberActingAs(u64),
    /// Node `id` itself, member or not (asking to be added, or retired), or a member passing
    /// its request on to the leader.
    NodeOrMember(u64),
}

/// Why a removed node's certificate is refused.
pub(crate) fn removed(id: u64) -> String {
    format!("node {id} was removed from this cluster")
}

impl Service {
    pub fn new(
        raft: openraft::Raft<TypeConfig>,
        node: Weak<RaftNode>,
        transport: Transport,
    ) -> Service {
        Service {
            raft,
            node,
            transport,
            receiving: Mutex::new(None),
            refused: Mutex::new(Default::default()),
        }
    }

    /// Checks the caller's certificate for `method`; returns the node it names and what it
    /// says (`None` in an `--insecure` cluster).
    fn authorize<T>(
        &self,
        req: &Request<T>,
        method: &'static str,
        who: Who,
    ) -> Result<Option<(u64, crate::pki::CertInfo)>, Status> {
        if crate::drill::isolated() {
            return Err(Status::unavailable(crate::drill::ISOLATED));
        }
        if matches!(self.transport, Transport::Insecure) {
            return Ok(None);
        }
        let check = || -> Result<(u64, crate::pki::CertInfo), Status> {
            let (id, cert) = tls::peer_cert(req)?;
            let acting = match who {
                Who::Member | Who::NodeOrMember(_) => None,
                Who::MemberActingAs(a) => Some(a),
            };
            if let Some(a) = acting.filter(|a| *a != id) {
                return Err(Status::permission_denied(format!(
                    "the certificate names node {id}, but the request acts as node {a}"
                )));
            }
            let node = self.node()?;
            // The cluster's record of the node, once it has one, is the last word: a removed
            // node's certificate, or one for a key the node was not admitted with (made by
            // someone holding the CA key), is refused.
            if let Some(record) = node.node_record(id) {
                if record.retired_at.is_some() {
                    return Err(Status::permission_denied(removed(id)));
                }
                if record.key_sha256 != cert.key_sha256 {
                    return Err(Status::permission_denied(format!(
                        "the certificate's key is not the one node {id} was admitted with"
                    )));
                }
            }
            if !matches!(who, Who::NodeOrMember(a) if a == id) {
                let membership = node.membership();
                let unknown = match membership.nodes().next() {
                    // A node catching up replays old memberships, which lack the members
                    // added since (perhaps the leader sending it the log): the members the
                    // cluster had when this node enrolled count too.
                    Some(_) => {
                        let leading = matches!(method, "append" | "snapshot");
                        membership.get_node(&id).is_none()
                            && !(leading && node.committed_member(id))
                            && !node.enrolled_with(id, &cert.key_sha256)
                    }
                    // No membership yet (a joiner before its first append): the nodes the
                    // cluster had admitted when this one enrolled.
                    None => !node.known_before_state(id, &cert.key_sha256),
                };
                if unknown {
                    return Err(Status::permission_denied(format!(
                        "node {id} is not a member of this cluster"
                    )));
                }
            }
            Ok((id, cert))
        };
        check().map(Some).inspect_err(|status| {
            let peer = req
                .remote_addr()
                .map_or_else(|| "?".to_string(), |a| a.ip().to_string());
            let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
            if refused.len() > 1024 {
                refused.clear();
            }
            if refused.insert((peer.clone(), method)) {
                tracing::warn!(%peer, method, reason = status.message(), "refused a node-to-node request (logged once per peer and method)");
            }
        })
    }

    fn node(&self) -> Result<std::sync::Arc<RaftNode>, Status> {
        self.node
            .upgrade()
            .ok_or_else(|| Status::unavailable("shutting down"))
    }

    /// A snapshot chunk may start anywhere up to what has arrived of its snapshot (a resent
    /// chunk rewrites bytes already there), never beyond: a crafted offset cannot make a huge
    /// sparse file that installing would then read.
    fn check_chunk(&self, req: &rpc::SnapshotReq) -> Result<(), Status> {
        let mut receiving = self.receiving.lock().unwrap_or_else(|p| p.into_inner());
        admit_chunk(
            &mut receiving,
            &req.meta.snapshot_id,
            req.offset,
            req.data.len() as u64,
        )
    }
}

/// See `Service::check_chunk`; `receiving` is the snapshot being received and its bytes so far.
fn admit_chunk(
    receiving: &mut Option<(String, u64)>,
    id: &str,
    offset: u64,
    len: u64,
) -> Result<(), Status> {
    let arrived = match receiving.as_ref() {
        _ if offset == 0 => 0,
        Some((current, arrived)) if current == id => *arrived,
        _ => {
            return Err(Status::invalid_argument(
                "snapshot chunk of a snapshot that was not started",
            ))
        }
    };
    if offset > arrived {
        return Err(Status::invalid_argument(format!(
            "snapshot chunk at offset {offset} but only {arrived} bytes have arrived"
        )));
    }
    *receiving = Some((id.to_string(), arrived.max(offset.saturating_add(len))));
    Ok(())
}

/// Terms and log indexes a peer may name: far beyond any real cluster's (a term per election,
/// an index per entry), and far enough from `u64::MAX` that openraft's `+ 1` never wraps.
const MAX_TERM: u64 = 1 << 48;
const MAX_INDEX: u64 = 1 << 56;

fn sane_vote(v: &Vote<u64>) -> Result<(), Status> {
    match v.leader_id.term <= MAX_TERM {
        true => Ok(()),
        false => Err(Status::invalid_argument(format!(
            "term {} is out of range",
            v.leader_id.term
        ))),
    }
}

fn sane_log_id(l: &Option<LogId<u64>>) -> Result<(), Status> {
    match l {
        Some(l) if l.leader_id.term > MAX_TERM || l.index > MAX_INDEX => Err(
            Status::invalid_argument(format!("log id {l} is out of range")),
        ),
        _ => Ok(()),
    }
}

fn fatal(e: impl std::fmt::Display) -> RemoteError {
    RemoteError::Replication(crate::node::Unavailable::Raft(e.to_string()).into())
}

#[tonic::async_trait]
impl RaftService for Service {
    async fn vote(&self, req: Request<rpc::VoteReq>) -> Result<Response<rpc::VoteReply>, Status> {
        self.authorize(
            &req,
            "vote",
            Who::MemberActingAs(req.get_ref().vote.leader_id.node_id),
        )?;
        let req = req.into_inner();
        sane_vote(&req.vote)?;
        sane_log_id(&req.last_log_id)?;
        Ok(Response::new(self.raft.vote(req).await.map_err(fatal)))
    }

    async fn append(
        &self,
        req: Request<rpc::AppendReq>,
    ) -> Result<Response<rpc::AppendReply>, Status> {
        self.authorize(
            &req,
            "append",
            Who::MemberActingAs(req.get_ref().vote.leader_id.node_id),
        )?;
        let stamp = req
            .metadata()
            .get(crate::closed::STAMP_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::closed::Stamp::decode(req.get_ref().vote.leader_id.node_id, v));
        let req = req.into_inner();
        sane_vote(&req.vote)?;
        sane_log_id(&req.prev_log_id)?;
        sane_log_id(&req.leader_commit)?;
        for e in &req.entries {
            sane_log_id(&Some(e.log_id))?;
        }
        let reply = self.raft.append_entries(req).await;
        // Accepted from the current leader, with its log matched: its stamp holds here.
        if let (Ok(openraft::raft::AppendEntriesResponse::Success), Some(stamp)) = (&reply, stamp) {
            if let Some(node) = self.node.upgrade() {
                node.closed().received(stamp);
            }
        }
        Ok(Response::new(reply.map_err(fatal)))
    }

    async fn snapshot(
        &self,
        req: Request<rpc::SnapshotReq>,
    ) -> Result<Response<rpc::SnapshotReply>, Status> {
        self.authorize(
            &req,
            "snapshot",
            Who::MemberActingAs(req.get_ref().vote.leader_id.node_id),
        )?;
        let req = req.into_inner();
        sane_vote(&req.vote)?;
        sane_log_id(&req.meta.last_log_id)?;
        self.check_chunk(&req)?;
        let res = self.raft.install_snapshot(req).await.map_err(|e| match e {
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
        self.authorize(&req, "forward", Who::Member)?;
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
        let caller = self.authorize(&req, "join", Who::NodeOrMember(req.get_ref().0))?;
        let node = self.node()?;
        let (id, info) = req.into_inner();
        // In a cluster whose CA the operator runs (--ca-cert: no member holds its key), a node
        // comes with a certificate that CA signed and never enrolls: it is admitted with that
        // certificate's key. Where the cluster made its own CA, only enrollment admits.
        let operator_ca = self
            .transport
            .tls()
            .is_some_and(|t| t.credentials().ca_key_pem.is_none());
        if let Some((caller, cert)) = caller.filter(|(c, _)| *c == id && operator_ca) {
            if node.node_record(caller).is_none() {
                if let Err(e) = node.admit(caller, cert.key_sha256).await {
                    return Ok(Response::new(Err(e.into())));
                }
            }
        }
        Ok(Response::new(
            node.add_member(id, info).await.map_err(RemoteError::from),
        ))
    }

    async fn remove(
        &self,
        req: Request<rpc::RemoveReq>,
    ) -> Result<Response<rpc::MembershipReply>, Status> {
        // A leader that removed itself asks the members it left to retire it: a node may ask
        // that for itself, if the cluster admitted it (its record's key was checked).
        let caller = self.authorize(&req, "remove", Who::NodeOrMember(*req.get_ref()))?;
        let node = self.node()?;
        let asker = caller.map(|(id, _)| id);
        if asker == Some(*req.get_ref()) && node.node_record(*req.get_ref()).is_none() {
            return Err(Status::permission_denied(format!(
                "node {} is not a member of this cluster",
                req.get_ref()
            )));
        }
        Ok(Response::new(
            node.remove_for_peer(req.into_inner())
                .await
                .map_err(RemoteError::from),
        ))
    }

    async fn announce(
        &self,
        req: Request<rpc::JoinReq>,
    ) -> Result<Response<rpc::MembershipReply>, Status> {
        self.authorize(&req, "announce", Who::MemberActingAs(req.get_ref().0))?;
        let node = self.node()?;
        let (id, info) = req.into_inner();
        Ok(Response::new(
            node.update_member_here(id, info)
                .await
                .map_err(RemoteError::from),
        ))
    }

    async fn digest(
        &self,
        req: Request<rpc::DigestReq>,
    ) -> Result<Response<rpc::DigestReply>, Status> {
        self.authorize(&req, "digest", Who::Member)?;
        let node = self.node()?;
        Ok(Response::new(
            node.wait_check(req.into_inner(), std::time::Duration::from_secs(30))
                .await
                .map_err(RemoteError::from),
        ))
    }

    async fn ping(&self, req: Request<rpc::PingReq>) -> Result<Response<rpc::PingReply>, Status> {
        self.authorize(&req, "ping", Who::Member)?;
        let node = self.node()?;
        let expires = self.transport.tls().map(|t| t.cert().not_after);
        Ok(Response::new((
            node.id,
            node.applied_index(),
            expires,
            crate::node::wall_clock_ms(),
        )))
    }

    async fn enroll(
        &self,
        req: Request<rpc::EnrollReq>,
    ) -> Result<Response<rpc::EnrollReply>, Status> {
        let node = self.node()?;
        let req = req.into_inner();
        let answer = node.enroll(req).await;
        if let Err(e) = &answer {
            tracing::warn!(error = %e, "refused to enroll a node");
        }
        Ok(Response::new(answer.map_err(RemoteError::from)))
    }

    async fn renew(
        &self,
        req: Request<rpc::RenewReq>,
    ) -> Result<Response<rpc::RenewReply>, Status> {
        let Some((id, _)) = self.authorize(&req, "renew", Who::Member)? else {
            return Ok(Response::new(Err(ReplicationError::from(
                Refusal::Insecure,
            )
            .into())));
        };
        let node = self.node()?;
        Ok(Response::new(
            node.renew_for(&req.into_inner(), id)
                .map_err(RemoteError::from),
        ))
    }

    async fn put_blob(
        &self,
        req: Request<rpc::PutBlobReq>,
    ) -> Result<Response<rpc::PutBlobReply>, Status> {
        self.authorize(&req, "put_blob", Who::Member)?;
        let node = self.node()?;
        let rpc::PutBlobReq { name, data } = req.into_inner();
        let stored = node.store_blob_locally(name, data, true).await;
        Ok(Response::new(rpc::PutBlobReply(
            stored.map_err(RemoteError::from),
        )))
    }

    async fn get_blob(
        &self,
        req: Request<rpc::GetBlobReq>,
    ) -> Result<Response<rpc::GetBlobReply>, Status> {
        self.authorize(&req, "get_blob", Who::Member)?;
        let node = self.node()?;
        let found = node.local_blob(req.into_inner().0).await;
        Ok(Response::new(rpc::GetBlobReply(
            found.map_err(RemoteError::from),
        )))
    }

    async fn read_index(
        &self,
        req: Request<rpc::ReadIndexReq>,
    ) -> Result<Response<rpc::ReadIndexReply>, Status> {
        self.authorize(&req, "read_index", Who::Member)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_chunks_may_not_skip_ahead() {
        let mut r = None;
        assert!(admit_chunk(&mut r, "s1", 5, 10).is_err(), "not started");
        admit_chunk(&mut r, "s1", 0, 10).unwrap();
        admit_chunk(&mut r, "s1", 10, 10).unwrap();
        admit_chunk(&mut r, "s1", 10, 10).unwrap(); // resent
        assert!(admit_chunk(&mut r, "s1", 1 << 62, 10).is_err());
        assert!(
            admit_chunk(&mut r, "s2", 20, 10).is_err(),
            "another snapshot"
        );
        admit_chunk(&mut r, "s2", 0, 3).unwrap();
        assert!(admit_chunk(&mut r, "s2", 20, 1).is_err());
    }

    #[test]
    fn terms_and_indexes_out_of_range_are_refused() {
        assert!(sane_vote(&Vote::new(7, 1)).is_ok());
        assert!(sane_vote(&Vote::new(u64::MAX, 1)).is_err());
        let id = |term, index| Some(LogId::new(openraft::CommittedLeaderId::new(term, 1), index));
        assert!(sane_log_id(&id(7, 100)).is_ok());
        assert!(sane_log_id(&None).is_ok());
        assert!(sane_log_id(&id(u64::MAX, 1)).is_err());
        assert!(sane_log_id(&id(1, u64::MAX)).is_err());
    }
}
