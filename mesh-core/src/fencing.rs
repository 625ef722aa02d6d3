//! Fenced ownership: the lease protocol of one node, as a pure, synchronous state machine
//! ([`Fencing`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Member, MemberStatus, MembershipView, NodeId, Refusal};

/// The timings of the lease protocol. Every node of a cluster should use the same.
///
/// ```
/// use std::time::Duration;
/// use mesh_core::LeaseConfig;
///
/// // `mesh-node --lease-ms 2000`:
/// let lease = LeaseConfig::with_lease(Duration::from_secs(2));
/// assert_eq!(lease.renew_interval, Duration::from_millis(500));
/// assert_eq!(LeaseConfig::default().lease, Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How long a quorum's grants let a node serve, from the moment it asked for them.
    pub lease: Duration,
    /// How often a node asks for grants; a few renewals fit in one lease.
    pub renew_interval: Duration,
    /// Added to `lease` before a grantor reports an incarnation expired: room for the rate
    /// difference of two monotonic clocks.
    pub margin: Duration,
}

impl Default for LeaseConfig {
    /// A 1 s lease renewed every 250 ms with a 100 ms margin: a dead node's shards move
    /// within about 1.4 s of its death.
    fn default() -> LeaseConfig {
        LeaseConfig {
            lease: Duration::from_millis(1000),
            renew_interval: Duration::from_millis(250),
            margin: Duration::from_millis(100),
        }
    }
}

impl LeaseConfig {
    /// A config with this lease, renewed four times per lease, with a 10 % margin (at least
    /// 20 ms).
    pub fn with_lease(lease: Duration) -> LeaseConfig {
        LeaseConfig {
            lease,
            renew_interval: lease / 4,
            margin: (lease / 10).max(Duration::from_millis(20)),
        }
    }

    fn expiry(&self) -> Duration {
        self.lease + self.margin
    }
}

/// A node asks another for a grant of its lease.
///
/// [`Fencing::tick`] returns one per member when a round is due; the runtime sends each to
/// its member (`mesh-http`: `POST /internal/lease`, as JSON).
///
/// ```
/// use std::time::Duration;
/// use mesh_core::{Fencing, LeaseConfig, Member, NodeId, RenewRequest};
///
/// let a = Member::alive(NodeId::new("a").unwrap(), "a:1", ["counter"]).unwrap();
/// let b = Member::alive(NodeId::new("b").unwrap(), "b:1", ["counter"]).unwrap();
/// let mut lease = Fencing::new(a, LeaseConfig::default(), false, Duration::ZERO);
/// lease.observe(b, Duration::ZERO);
///
/// let requests = lease.tick(Duration::ZERO);
/// let (to, request) = &requests[0];
/// assert_eq!((to.node.as_str(), request.from.node.as_str()), ("b", "a"));
/// // `a` founded the cluster: it counts in quorums for sure, not as a learner.
/// assert!(request.established);
///
/// let json = serde_json::to_string(request).unwrap();
/// assert_eq!(serde_json::from_str::<RenewRequest>(&json).unwrap(), *request);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenewRequest {
    /// The asking node as it describes itself (incarnation, version, capabilities).
    pub from: Member,
    /// The asker's round number; the reply echoes it.
    pub round: u64,
    /// The asker is an established member: it was admitted once, so every member that was
    /// not fenced acknowledged it and counts it in quorums. A new member is a learner until
    /// then.
    #[serde(default)]
    pub established: bool,
}

/// The answer to a [`RenewRequest`], from [`Fencing::on_request`]; the asker takes it in with
/// [`Fencing::on_reply`].
///
/// ```
/// use std::time::Duration;
/// use mesh_core::{Fencing, LeaseConfig, Member, NodeId};
///
/// let a = Member::alive(NodeId::new("a").unwrap(), "a:1", ["counter"]).unwrap();
/// let b = Member::alive(NodeId::new("b").unwrap(), "b:1", ["counter"]).unwrap();
/// let now = Duration::ZERO;
/// // `a` founded the cluster; `b` joins it: it was given `a` as a seed, and gossip told it of
/// // `a`.
/// let mut a_lease = Fencing::new(a.clone(), LeaseConfig::default(), false, now);
/// let mut b_lease = Fencing::new(b.clone(), LeaseConfig::default(), true, now);
/// b_lease.observe(a, now);
///
/// let (_, request) = b_lease.tick(now).remove(0);
/// // `settled`: `a` has stopped every activation that `b`'s arrival moves to `b`.
/// let reply = a_lease.on_request(request.clone(), now, true);
/// assert_eq!(reply.round, request.round);
/// assert!(reply.granted && !reply.fenced);
/// assert_eq!(reply.acknowledged, Some(b.version));
/// // The joiner learns the whole cluster from the reply.
/// assert_eq!(reply.members.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenewReply {
    /// The answering node as it describes itself.
    pub from: Member,
    /// The round this answers.
    pub round: u64,
    /// Whether the asker's lease is granted.
    pub granted: bool,
    /// The asker's incarnation was declared expired here (or a newer one is known): it must
    /// rejoin as a new incarnation.
    pub fenced: bool,
    /// The version of the asker's descriptor that this node routes by, once it has also
    /// stopped every activation that version takes over; `None` while it has not.
    pub acknowledged: Option<u64>,
    /// Every member this node knows, so that a joining node learns the whole cluster.
    pub members: Vec<Member>,
    /// The incarnations this node has stopped granting for good: `(node, incarnation)`.
    pub expired: Vec<(NodeId, u64)>,
    /// The incarnations this node knows to be established members (itself included, if it
    /// is one): `(node, incarnation)`.
    #[serde(default)]
    pub established: Vec<(NodeId, u64)>,
}

/// What changed in a node's standing, for logs and for the runtime to act on; see
/// [`Fencing::take_events`].
///
/// ```
/// use std::time::Duration;
/// use mesh_core::{Fencing, FencingEvent, LeaseConfig, Member, MemberStatus, NodeId};
///
/// let a = Member::alive(NodeId::new("a").unwrap(), "a:1", ["counter"]).unwrap();
/// let b = Member::alive(NodeId::new("b").unwrap(), "b:1", ["counter"]).unwrap();
/// let config = LeaseConfig::default();
/// let mut lease = Fencing::new(a, config, false, Duration::ZERO);
/// assert_eq!(
///     lease.take_events(),
///     [FencingEvent::Admitted { version: 0 }, FencingEvent::LeaseAcquired],
/// );
///
/// // Gossip tells `a` of `b`, which never answers a renewal.
/// lease.observe(b, Duration::ZERO);
/// lease.tick(config.lease + config.margin);
/// let mut fenced = Vec::new();
/// for event in lease.take_events() {
///     match event {
///         FencingEvent::LeaseLost | FencingEvent::Reincarnated { .. } => {
///             // The runtime stops every activation here, before it serves again.
///         }
///         FencingEvent::MemberFenced { node, incarnation } => fenced.push((node, incarnation)),
///         _ => {}
///     }
/// }
/// assert_eq!(fenced, [(NodeId::new("b").unwrap(), 0)]);
/// assert_eq!(lease.view().get("b").unwrap().status, MemberStatus::Dead);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FencingEvent {
    /// This node holds a valid lease again (or for the first time).
    LeaseAcquired,
    /// This node's lease ran out: it must stop every activation before it serves again.
    LeaseLost,
    /// Every known member acknowledged this node's current descriptor.
    Admitted {
        /// The admitted descriptor version.
        version: u64,
    },
    /// This node's incarnation was fenced by the others; it rejoins as `incarnation`.
    Reincarnated {
        /// The new incarnation.
        incarnation: u64,
    },
    /// A member was learned (a join, or a new incarnation of a known node).
    MemberJoined {
        /// The member.
        node: NodeId,
        /// Its incarnation.
        incarnation: u64,
    },
    /// A member's incarnation is fenced: its lease has surely expired; its shards move.
    MemberFenced {
        /// The member.
        node: NodeId,
        /// The fenced incarnation.
        incarnation: u64,
    },
    /// A member announced a graceful leave; its shards move at once.
    MemberLeft {
        /// The member.
        node: NodeId,
    },
}

/// What this node knows of one other member.
#[derive(Debug, Clone)]
struct Peer {
    /// Its newest known descriptor.
    member: Member,
    /// When this node learned of this incarnation.
    known_since: Duration,
    /// When this node last granted this incarnation's lease.
    granted_at: Option<Duration>,
    /// When this node last granted an older incarnation of the same node: a new incarnation
    /// is acknowledged only once the old one's lease has surely expired.
    superseded_grant: Option<Duration>,
    /// This node declared the incarnation expired: it is never granted again.
    refused: bool,
    /// The members that report this incarnation expired (this node included).
    expired_by: BTreeSet<NodeId>,
    /// A quorum's reports agree: this incarnation holds no lease anywhere.
    fenced: bool,
    /// The version of this node's descriptor that the member acknowledged.
    acknowledged: Option<u64>,
    /// When this node last heard from the member (a request or a reply).
    heard_at: Option<Duration>,
    /// This process has had a reply from this incarnation (with its members and their status).
    replied: bool,
    /// When this node learned that the member is leaving.
    left_at: Option<Duration>,
    /// A live member reported this incarnation fenced: this node grants it nothing more (its
    /// own report follows from the usual timer, once its last grant has surely expired) and
    /// does not wait for its reply to catch up.
    fenced_elsewhere: bool,
    /// This incarnation is known to be established (see [`Standing`]).
    established: bool,
}

/// How a member counts toward quorums in one node's eyes.
///
/// Membership changes are not agreed through a log, so two nodes can count quorums over bases
/// that differ by a member that just joined, and quorums of different bases need not
/// intersect (with the tie rule, `{a, b}` of `{a, b, c, d}` and `{c, d, e}` of
/// `{a, b, c, d, e}` do not). A member therefore enters the count in steps, in the manner of
/// Raft's learners and joint consensus:
///
/// - **`Joint`**: counted both ways. A lease is valid only if its grants are a quorum with and
///   without the member; a fencing holds only if it holds with and without it. This is how a
///   node counts every member it does not know to be established: a new node, a new process of
///   a known node id (it cannot tell whether it was admitted before), a node id that left
///   gracefully and came back. Counting both ways is safe against any other node's count;
///   not counting a member at all is not, since the member (or a node that knows it) may
///   count this node.
/// - **`In`**: established, i.e. this incarnation was admitted, hence acknowledged by every
///   member it did not fence, each of which knew it and so counts it both ways or for sure:
///   it is counted for sure.
/// - **`Left`**: it announced a graceful leave; see [`Peer::left_recently`] for how fencing
///   still counts it for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Left,
    Joint,
    In,
}

impl Peer {
    fn new(member: Member, now: Duration) -> Peer {
        Peer {
            member,
            known_since: now,
            granted_at: None,
            superseded_grant: None,
            refused: false,
            expired_by: BTreeSet::new(),
            fenced: false,
            acknowledged: None,
            heard_at: None,
            replied: false,
            left_at: None,
            fenced_elsewhere: false,
            established: false,
        }
    }

    fn standing(&self) -> Standing {
        if self.member.leaving {
            Standing::Left
        } else if self.established {
            Standing::In
        } else {
            Standing::Joint
        }
    }

    /// Whether the member is live in this node's eyes: neither fenced nor leaving. Only live
    /// members are asked for grants, must acknowledge joiners and own shards.
    fn in_base(&self) -> bool {
        !self.fenced && !self.member.leaving
    }

    /// Whether the member has not left: it is asked for grants and, by its [`Standing`],
    /// counts toward quorums, fenced or not. A fenced member may still grant others (it need
    /// not know it is fenced), and two nodes that fenced different members would otherwise
    /// count quorums of different bases that need not intersect: each could fence the other
    /// and serve alone.
    fn not_left(&self) -> bool {
        !self.member.leaving
    }

    /// Whether the member left less than `expiry` ago: it may have granted a lease just
    /// before it announced the leave, so fencing still counts it as a possible grantor.
    fn left_recently(&self, now: Duration, expiry: Duration) -> bool {
        self.left_at.is_some_and(|at| at + expiry > now)
    }
}

/// One round of renewal requests, kept while a grant for it could still extend the lease.
#[derive(Debug, Clone, Default)]
struct Round {
    sent_at: Duration,
    granted: BTreeSet<NodeId>,
}

/// The lease state of one node: its own lease and admission, and what it knows of the
/// others' leases.
///
/// Membership (gossip) says who exists; this state machine decides who may *serve*. It follows the
/// leader-lease idea of Chubby and Raft, with Akka's keep-majority and Orleans' rule that a
/// joining silo serves only once every other silo has acknowledged it:
///
/// - **Lease.** Every `renew_interval` a node asks every other member for a grant
///   ([`RenewRequest`]). When grants from a *quorum* of the members (itself included) answer a
///   round, its lease runs until `round start + lease`, measured on its own monotonic clock
///   from the moment it *sent* the round, so no grantor can have granted earlier than that.
///   A node serves only while its lease is valid ([`Fencing::serving_until`]); a paused or
///   isolated node finds it expired the moment it runs again, and drops every activation.
/// - **Fencing.** A grantor that has not granted an incarnation for `lease + margin` stops
///   granting it for good and reports it *expired* in its replies. Once the members that report
///   an incarnation expired leave too few others to form a quorum with it, that incarnation can
///   no longer hold a lease anywhere: it is *fenced*, and only then do the survivors take its
///   shards ([`MemberStatus::Dead`]). A fenced node that comes back learns it from the refusals
///   and rejoins as a new incarnation, with no activations.
/// - **Admission.** A member owns shards of a capability in everybody's routing table as soon
///   as it is known, but it *serves* them only once every other member it knows has
///   acknowledged its current descriptor ([`RenewReply::acknowledged`]): an acknowledgement
///   means that the other member routes by it and has stopped every activation it takes over.
///   A joining node, a node that registered a capability, and a new incarnation are all
///   admitted this way; until then requests through them wait.
/// - **Quorum.** More than half of the members that have not left gracefully; a tie goes to
///   the half holding the lowest node id. A graceful leave removes a member from the count (it
///   stopped serving before it announced the leave); a fenced member stays in it: it may still
///   grant others, and two nodes that dropped different fenced members would count quorums
///   that need not intersect.
/// - **Joins.** Two nodes that count quorums over bases differing by a new member need not
///   have intersecting quorums, so a member that is not known to be established is counted
///   both ways: a lease must be a quorum, and a fencing must hold, with and
///   without it. Every lease is re-checked against the base whenever the base changes, and a
///   node that is a quorum on its own counts a lease without grants only if it has been so
///   since it last held one.
/// - **Restarts.** A refusal is a promise a restarted process does not remember: a new process
///   grants nothing until every live member it knows has replied (and it learned whom they
///   fenced), and acknowledges nobody until whatever its predecessor served has surely stopped.
///
/// Time is a [`Duration`] since an origin of the caller's choice, read from a monotonic clock:
/// every method takes `now`, so a simulator can drive many nodes on virtual clocks.
///
/// ```
/// use std::time::Duration;
/// use mesh_core::{Fencing, FencingEvent, LeaseConfig, Member, NodeId, Refusal};
///
/// let a = Member::alive(NodeId::new("a").unwrap(), "a:1", ["counter"]).unwrap();
/// let b = Member::alive(NodeId::new("b").unwrap(), "b:1", ["counter"]).unwrap();
/// let config = LeaseConfig::default();
/// let now = Duration::ZERO;
/// // `a` founded the cluster; `b` was started with `a` as its seed, and gossip told it of `a`.
/// let mut a_lease = Fencing::new(a.clone(), config, false, now);
/// let mut b_lease = Fencing::new(b, config, true, now);
/// b_lease.observe(a, now);
/// assert_eq!(b_lease.refusal(now).unwrap().0, Refusal::NotReady);
///
/// // One round: `b` asks `a`, whose reply grants its lease and acknowledges it.
/// for (_to, request) in b_lease.tick(now) {
///     let reply = a_lease.on_request(request, now, true);
///     b_lease.on_reply(reply, now);
/// }
/// assert!(b_lease.is_serving(now));
/// assert!(b_lease.take_events().contains(&FencingEvent::LeaseAcquired));
/// // A lease lasts as long as its renewals: unrenewed, it runs out.
/// assert!(!b_lease.is_serving(now + config.lease));
/// ```
#[derive(Debug, Clone)]
pub struct Fencing {
    config: LeaseConfig,
    me: Member,
    /// Started with seeds: alone, this node has not learned its cluster yet.
    expect_cluster: bool,
    peers: BTreeMap<NodeId, Peer>,
    lease_until: Option<Duration>,
    had_lease: bool,
    admitted_version: Option<u64>,
    draining: bool,
    /// Rounds still young enough to extend the lease, by number.
    rounds: BTreeMap<u64, Round>,
    last_round: u64,
    /// A member refused this incarnation since it last held a lease.
    refused_me: bool,
    /// When this process first had a reply from every live member it knows, so that it knows
    /// whom they fenced. Until then it grants nothing: a fencing may have counted on a promise
    /// of a previous process of this node ("never grant that incarnation again"), which a new
    /// process does not remember.
    caught_up: Option<Duration>,
    /// Whatever a previous process of this node may have served has surely stopped: every
    /// live member acknowledged this process (each waits out its grants to the previous one
    /// first), or lease + margin passed since it caught up (the others stopped granting the
    /// previous one before they answered this one). Until then it acknowledges nobody: it
    /// cannot vouch for having stopped what the asker takes over.
    predecessor_gone: bool,
    /// A member's new incarnation voided the reports of its previous one, or a member left:
    /// fencings are weighed again.
    reweigh: bool,
    /// This node id is an established member (see [`Standing`]): it founded the cluster, or
    /// an incarnation of it was admitted. Until then it counts itself both ways.
    established: bool,
    /// This node is a quorum on its own (it is alone, or wins the tie of a base of two), and
    /// has been since it started alone or since it last held a lease. Only then does it count
    /// a lease without any other member's grant: one that lost its lease before the others
    /// left may have been fenced meanwhile, and a member it does not know of (a node id that
    /// left and came back while it was cut off) may count it.
    sole: bool,
    next_round_at: Duration,
    view: MembershipView,
    events: Vec<FencingEvent>,
}

impl Fencing {
    /// The lease state of `me` at `now`. With `expect_cluster` (the node was given seeds) it
    /// owns nothing until it has heard from another member.
    pub fn new(me: Member, config: LeaseConfig, expect_cluster: bool, now: Duration) -> Fencing {
        let mut fencing = Fencing {
            config,
            me,
            expect_cluster,
            peers: BTreeMap::new(),
            lease_until: None,
            had_lease: false,
            admitted_version: None,
            draining: false,
            rounds: BTreeMap::new(),
            last_round: 0,
            refused_me: false,
            caught_up: None,
            predecessor_gone: false,
            reweigh: false,
            established: !expect_cluster,
            sole: !expect_cluster,
            next_round_at: now,
            view: MembershipView::default(),
            events: Vec::new(),
        };
        fencing.refresh(now);
        fencing
    }

    /// The timings in force.
    pub fn config(&self) -> LeaseConfig {
        self.config
    }

    /// This node as it describes itself.
    pub fn local(&self) -> &Member {
        &self.me
    }

    /// Every member with the status this node gives it, this node included: the input of
    /// routing. Its epoch grows on every change.
    pub fn view(&self) -> &MembershipView {
        &self.view
    }

    /// Takes the events since the last call.
    pub fn take_events(&mut self) -> Vec<FencingEvent> {
        std::mem::take(&mut self.events)
    }

    /// Until when this node may serve, on its clock: its lease's end, once it is admitted and
    /// not draining; `None` when it may not serve at all.
    pub fn serving_until(&self) -> Option<Duration> {
        if self.draining || !self.is_admitted() {
            return None;
        }
        self.lease_until
    }

    /// Whether this node may serve at `now`.
    pub fn is_serving(&self, now: Duration) -> bool {
        self.serving_until().is_some_and(|until| now < until)
    }

    /// Whether this node has learned its cluster and every member acknowledged its current
    /// descriptor.
    pub fn is_admitted(&self) -> bool {
        self.admitted_version == Some(self.me.version)
    }

    /// Why this node does not serve at `now` (the kind, and a message for a person); `None`
    /// when it does.
    pub fn refusal(&self, now: Duration) -> Option<(Refusal, String)> {
        if self.draining {
            let message = "this node is draining before it leaves the cluster";
            return Some((Refusal::Draining, message.into()));
        }
        if !self.is_admitted() {
            let waiting: Vec<&str> = self
                .peers
                .values()
                .filter(|p| p.in_base() && p.acknowledged < Some(self.me.version))
                .map(|p| p.member.node.as_str())
                .collect();
            let message = if self.expect_cluster && self.peers.is_empty() {
                "this node has not learned its cluster yet".into()
            } else {
                format!(
                    "this node is joining: waiting for {} to acknowledge it",
                    waiting.join(", ")
                )
            };
            return Some((Refusal::NotReady, message));
        }
        match self.lease_until {
            Some(until) if now < until => None,
            _ => Some((
                Refusal::NoLease,
                format!(
                    "this node cannot confirm its ownership: no quorum of the {} members granted \
                     its lease within {} ms",
                    {
                        let (sure, both) = self.base();
                        sure.len() + both.len()
                    },
                    self.config.lease.as_millis()
                ),
            )),
        }
    }

    /// This node joins an existing cluster after all (it was given seeds after it started):
    /// until it has heard from another member it is not admitted, and serves nothing.
    pub fn expect_cluster(&mut self, now: Duration) {
        if !self.expect_cluster {
            self.expect_cluster = true;
            if !self.peers.values().any(|p| p.heard_at.is_some()) {
                self.admitted_version = None;
                self.established = false;
            }
            self.refresh(now);
        }
    }

    /// Replaces this node's capabilities (a new descriptor version: it serves again once the
    /// others acknowledged it).
    pub fn set_local(&mut self, member: Member, now: Duration) {
        if member.capabilities != self.me.capabilities || member.addr != self.me.addr {
            self.me.capabilities = member.capabilities;
            self.me.addr = member.addr;
            self.me.version += 1;
            self.refresh(now);
        }
    }

    /// Stops serving (before the activations are stopped and the leave is announced).
    pub fn drain(&mut self, now: Duration) {
        self.draining = true;
        self.refresh(now);
    }

    /// Announces the leave: from now on this node's descriptor says `leaving`, and the others
    /// take its shards as soon as they see it. Call after every activation has stopped.
    pub fn leave(&mut self, now: Duration) {
        self.draining = true;
        if !self.me.leaving {
            self.me.leaving = true;
            self.me.version += 1;
            // Tell every member at the next tick rather than at the next round.
            self.next_round_at = now;
        }
        self.refresh(now);
    }

    /// Learns a member's descriptor (from gossip, or from a lease message).
    pub fn observe(&mut self, member: Member, now: Duration) {
        self.merge(member, now);
        self.refresh(now);
    }

    /// Advances the clock: reports and fences what expired, checks this node's lease, and
    /// starts a new round of renewals when one is due. Returns the requests to send.
    pub fn tick(&mut self, now: Duration) -> Vec<(Member, RenewRequest)> {
        let expiry = self.config.expiry();
        let me = self.me.node.clone();
        for peer in self.peers.values_mut() {
            let last = peer.granted_at.unwrap_or(peer.known_since);
            if !peer.refused && !peer.member.leaving && last + expiry <= now {
                peer.refused = true;
            }
            if peer.refused {
                peer.expired_by.insert(me.clone());
            }
        }
        // Refused while not serving (lease lost, or not admitted: the refuser will never
        // acknowledge this incarnation): only a new incarnation can serve again.
        if self.refused_me && !self.draining && !self.is_serving(now) {
            self.reincarnate(now);
        }
        let mut requests = Vec::new();
        let lease = self.config.lease;
        self.rounds.retain(|_, round| round.sent_at + lease > now);
        if now >= self.next_round_at {
            self.last_round += 1;
            let round = Round {
                sent_at: now,
                granted: BTreeSet::new(),
            };
            self.rounds.insert(self.last_round, round);
            // A node waiting for admission asks four times as often: its acknowledgements
            // arrive in the replies, and every round it waits is a round a join takes.
            let interval = if self.is_admitted() {
                self.config.renew_interval
            } else {
                self.config.renew_interval / 4
            };
            self.next_round_at = now + interval;
            let request = RenewRequest {
                from: self.me.clone(),
                round: self.last_round,
                established: self.established,
            };
            // Fenced members are asked too: they count toward quorums, and the answer of a
            // new process at their address is how this node learns their new incarnation.
            requests = self
                .peers
                .values()
                .filter(|p| p.not_left())
                .map(|p| (p.member.clone(), request.clone()))
                .collect();
        }
        self.refresh(now);
        requests
    }

    /// Answers another node's request. `settled` says whether the runtime has stopped every
    /// activation that this node's current routing moved away: only then does the reply
    /// acknowledge the asker's descriptor.
    pub fn on_request(
        &mut self,
        request: RenewRequest,
        now: Duration,
        settled: bool,
    ) -> RenewReply {
        let asker = request.from.clone();
        self.merge(request.from, now);
        if let Some(peer) = self.peers.get_mut(asker.node.as_str()) {
            if request.established && peer.member.incarnation == asker.incarnation {
                peer.established = true;
            }
        }
        self.refresh(now);
        let expiry = self.config.expiry();
        let mut reply = RenewReply {
            from: self.me.clone(),
            round: request.round,
            granted: false,
            fenced: false,
            acknowledged: None,
            members: self.view.members().cloned().collect(),
            expired: self.expired(),
            established: self.established_members(),
        };
        let Some(peer) = self.peers.get_mut(asker.node.as_str()) else {
            return reply; // the asker claims to be this node
        };
        if asker.incarnation < peer.member.incarnation
            || peer.refused
            || peer.fenced
            || peer.fenced_elsewhere
        {
            reply.fenced = true;
            return reply;
        }
        peer.heard_at = Some(now);
        if self.me.leaving {
            // Every grant of a leaving node precedes its announcement: see `left_recently`.
        } else if self.caught_up.is_some() {
            peer.granted_at = Some(now);
            reply.granted = true;
        }
        let old_expired = peer.superseded_grant.is_none_or(|g| g + expiry <= now);
        if settled && old_expired && self.predecessor_gone {
            reply.acknowledged = Some(peer.member.version.min(asker.version));
        }
        self.refresh(now);
        reply
    }

    /// Takes in a reply to one of this node's requests.
    pub fn on_reply(&mut self, reply: RenewReply, now: Duration) {
        let from = reply.from.node.clone();
        self.merge(reply.from, now);
        // A live member's fencings stand (a fenced one's may rest on promises since lost).
        let live = self.peers.get(from.as_str()).is_some_and(Peer::in_base);
        for member in reply.members {
            // Fenced there (dead, not leaving): whatever this node once promised about that
            // incarnation, it never grants it again.
            let fenced = live && member.status == MemberStatus::Dead && !member.leaving;
            let (node, incarnation) = (member.node.clone(), member.incarnation);
            self.merge(member, now);
            if let Some(peer) = self.peers.get_mut(node.as_str()) {
                if fenced && peer.member.incarnation == incarnation {
                    peer.fenced_elsewhere = true;
                }
            }
        }
        if let Some(peer) = self.peers.get_mut(from.as_str()) {
            peer.replied = true;
            peer.heard_at = Some(now);
            // Versions grow across incarnations too, so an old acknowledgement never admits
            // a newer descriptor.
            peer.acknowledged = peer.acknowledged.max(reply.acknowledged);
        }
        for (node, incarnation) in reply.established {
            if let Some(peer) = self.peers.get_mut(node.as_str()) {
                if peer.member.incarnation == incarnation {
                    peer.established = true;
                }
            }
        }
        for (node, incarnation) in reply.expired {
            if let Some(peer) = self.peers.get_mut(node.as_str()) {
                if peer.member.incarnation == incarnation && node != from {
                    peer.expired_by.insert(from.clone());
                }
            }
        }
        // Only a refusal of this incarnation counts: a late reply to a round of the previous
        // one would otherwise make a node that just rejoined rejoin again, and again.
        if reply.fenced && self.rounds.contains_key(&reply.round) {
            self.refused_me = true;
        }
        // Rounds are numbered per incarnation's life on this node, and dropped on a new
        // incarnation: a grant always answers this incarnation.
        if let Some(round) = self.rounds.get_mut(&reply.round) {
            if reply.granted {
                round.granted.insert(from);
            }
        }
        self.refresh(now);
    }

    /// `(node, incarnation)` of every member this node has stopped granting for good.
    fn expired(&self) -> Vec<(NodeId, u64)> {
        self.peers
            .values()
            .filter(|p| p.refused)
            .map(|p| (p.member.node.clone(), p.member.incarnation))
            .collect()
    }

    /// `(node, incarnation)` of every established member this node knows, itself included.
    fn established_members(&self) -> Vec<(NodeId, u64)> {
        let me = self
            .established
            .then(|| (self.me.node.clone(), self.me.incarnation));
        self.peers
            .values()
            .filter(|p| p.standing() == Standing::In)
            .map(|p| (p.member.node.clone(), p.member.incarnation))
            .chain(me)
            .collect()
    }

    fn lease_valid(&self, now: Duration) -> bool {
        self.lease_until.is_some_and(|until| now < until)
    }

    fn merge(&mut self, member: Member, now: Duration) {
        if member.node == self.me.node {
            return;
        }
        // A member counted from now on may make this node's lease need its grant: ask at once
        // rather than at the next round.
        if !member.leaving
            && self
                .peers
                .get(member.node.as_str())
                .is_none_or(|p| member.incarnation > p.member.incarnation)
        {
            self.next_round_at = self.next_round_at.min(now);
        }
        match self.peers.get_mut(member.node.as_str()) {
            None => {
                self.events.push(FencingEvent::MemberJoined {
                    node: member.node.clone(),
                    incarnation: member.incarnation,
                });
                self.peers
                    .insert(member.node.clone(), Peer::new(member, now));
            }
            Some(peer) if member.incarnation > peer.member.incarnation => {
                self.events.push(FencingEvent::MemberJoined {
                    node: member.node.clone(),
                    incarnation: member.incarnation,
                });
                let superseded_grant = peer.granted_at.max(peer.superseded_grant);
                let node = member.node.clone();
                // Counted both ways until this incarnation is known to be established.
                *peer = Peer::new(member, now);
                peer.superseded_grant = superseded_grant;
                // The old process's reports were promises that died with it: fencings that
                // counted on them are weighed again.
                for other in self.peers.values_mut() {
                    self.reweigh |= other.expired_by.remove(&node);
                }
            }
            Some(peer) if peer.member.is_superseded_by(&member) => {
                if member.leaving && !peer.member.leaving {
                    self.events.push(FencingEvent::MemberLeft {
                        node: member.node.clone(),
                    });
                }
                peer.member.capabilities = member.capabilities;
                peer.member.addr = member.addr;
                peer.member.version = member.version;
                peer.member.leaving = member.leaving;
            }
            Some(_) => {}
        }
    }

    fn reincarnate(&mut self, now: Duration) {
        self.me.incarnation += 1;
        self.me.version += 1;
        self.lease_until = None;
        self.refused_me = false;
        self.rounds.clear();
        for peer in self.peers.values_mut() {
            peer.acknowledged = None;
        }
        self.events.push(FencingEvent::Reincarnated {
            incarnation: self.me.incarnation,
        });
        self.next_round_at = now;
    }

    /// The members that count toward quorums for sure, and those that count both ways (see
    /// [`Standing`]), this node included.
    fn base(&self) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
        let (mut sure, mut both) = (BTreeSet::new(), BTreeSet::new());
        for peer in self.peers.values() {
            match peer.standing() {
                Standing::In => sure.insert(peer.member.node.clone()),
                Standing::Joint => both.insert(peer.member.node.clone()),
                Standing::Left => false,
            };
        }
        let me = self.me.node.clone();
        if self.established {
            sure.insert(me);
        } else {
            both.insert(me);
        }
        (sure, both)
    }

    fn base_is_only_me(&self) -> bool {
        self.peers.values().all(|p| p.standing() == Standing::Left)
    }

    /// Whether `granted` (this node included) is a quorum of the base `(sure, both)` however
    /// the members counted both ways count: the worst base holds every one of them that did
    /// not grant.
    fn is_lease_quorum(
        (sure, both): &(BTreeSet<NodeId>, BTreeSet<NodeId>),
        granted: &BTreeSet<NodeId>,
    ) -> bool {
        let mut base = sure.clone();
        base.extend(both.difference(granted).cloned());
        is_quorum(&base, granted)
    }

    /// Until when the grants of the rounds still kept make a lease in the base as it is now,
    /// which a join can make stricter than when the grants came in.
    fn lease_end(&self, now: Duration) -> Option<Duration> {
        let alone = (self.sole && self.base_is_only_me()).then(|| now + self.config.lease);
        let base = self.base();
        self.rounds
            .values()
            .filter(|round| {
                let mut granted = round.granted.clone();
                granted.insert(self.me.node.clone());
                (self.sole || granted.len() > 1) && Self::is_lease_quorum(&base, &granted)
            })
            .map(|round| round.sent_at + self.config.lease)
            .chain(alone)
            .max()
    }

    /// Re-derives fencing, admission, lease events and the view after any change.
    fn refresh(&mut self, now: Duration) {
        let expiry = self.config.expiry();
        for peer in self.peers.values_mut() {
            if peer.member.leaving && peer.left_at.is_none() {
                peer.left_at = Some(now);
                self.reweigh = true;
            }
        }
        // Fence incarnations that a quorum's reports leave without a possible lease. The base
        // is the quorum base plus the members that left recently, and those count as members
        // that may have granted: a node that has not learned of the leave yet, or learned it
        // earlier, counts quorums without them.
        let recent: BTreeSet<NodeId> = self
            .peers
            .values()
            .filter(|p| p.left_recently(now, expiry))
            .map(|p| p.member.node.clone())
            .collect();
        let (mut sure, both) = self.base();
        sure.extend(recent.iter().cloned());
        // A fencing must hold however the members counted both ways count: the most lenient
        // base holds every one of them that did not report.
        let blocked = |p: &Peer| {
            let may_grant = |n: &NodeId| !p.expired_by.contains(n) || recent.contains(n);
            let mut base = sure.clone();
            base.extend(both.iter().filter(|n| may_grant(n)).cloned());
            let rest: BTreeSet<NodeId> = base.iter().filter(|n| may_grant(n)).cloned().collect();
            !is_quorum(&base, &rest)
        };
        if std::mem::take(&mut self.reweigh) {
            // A fencing that no longer holds is undone: without the dropped reports, or with a
            // reporter gone (the fenced member may count quorums without it). The member owns
            // its shards again (and must acknowledge joiners) until it is fenced on what holds
            // now. This node's own refusal stands.
            for peer in self.peers.values_mut() {
                if peer.fenced && !peer.member.leaving && !blocked(peer) {
                    peer.fenced = false;
                }
            }
        }
        // A process that has not caught up may not know its whole cluster yet: a decision in
        // the small base it knows could fence a member that the others let serve.
        let newly: Vec<NodeId> = self
            .peers
            .values()
            .filter(|p| self.caught_up.is_some() && p.in_base() && blocked(p))
            .map(|p| p.member.node.clone())
            .collect();
        for node in newly {
            let peer = self.peers.get_mut(node.as_str()).expect("collected above");
            peer.fenced = true;
            peer.refused = true;
            self.events.push(FencingEvent::MemberFenced {
                node,
                incarnation: peer.member.incarnation,
            });
        }

        let learned = !self.expect_cluster || self.peers.values().any(|p| p.heard_at.is_some());
        if self.caught_up.is_none()
            && learned
            && self
                .peers
                .values()
                .filter(|p| p.in_base())
                .all(|p| p.replied || p.fenced_elsewhere)
        {
            self.caught_up = Some(now);
        }
        let version = self.me.version;
        let all_acknowledged = self
            .peers
            .values()
            .filter(|p| p.in_base())
            .all(|p| p.acknowledged >= Some(version));
        // Nobody acknowledged anything when every other member is fenced: wait for one of
        // them to come back as a new incarnation, which then acknowledges (two nodes that
        // fenced each other must not both serve as if the other did not exist).
        let someone_live = self.base_is_only_me() || self.peers.values().any(Peer::in_base);
        let admitted = (learned && all_acknowledged && someone_live).then_some(version);
        if admitted.is_some() || self.caught_up.is_some_and(|at| at + expiry <= now) {
            self.predecessor_gone = true;
        }
        if admitted.is_some() && self.admitted_version != admitted {
            self.events.push(FencingEvent::Admitted { version });
        }
        if admitted.is_some() {
            self.established = true;
        }
        self.admitted_version = admitted.or(self.admitted_version.filter(|v| *v == version));

        let me = BTreeSet::from([self.me.node.clone()]);
        self.sole =
            Self::is_lease_quorum(&self.base(), &me) && (self.sole || self.lease_valid(now));
        // A lease that ran out is lost even if the grants at hand make a new one at once (a
        // node that was paused past its lease and now counts a round of its own): whatever
        // it held across the gap must be dropped before it serves again, unless it is the
        // whole cluster.
        if self.had_lease && !self.lease_valid(now) && !(self.sole && self.base_is_only_me()) {
            self.events.push(FencingEvent::LeaseLost);
            self.had_lease = false;
        }
        self.lease_until = self.lease_end(now);
        let valid = self.lease_valid(now);
        if valid && !self.had_lease {
            self.events.push(FencingEvent::LeaseAcquired);
        } else if !valid && self.had_lease {
            self.events.push(FencingEvent::LeaseLost);
        }
        self.had_lease = valid;

        let mut me = self.me.clone();
        me.status = MemberStatus::Alive;
        self.view.upsert(me);
        let lease = self.config.lease;
        for peer in self.peers.values() {
            let mut member = peer.member.clone();
            member.status = if !peer.in_base() {
                MemberStatus::Dead
            } else if peer.heard_at.is_some_and(|h| h + lease > now) {
                MemberStatus::Alive
            } else {
                MemberStatus::Suspect
            };
            self.view.upsert(member);
        }
    }
}

/// Whether `set` is a quorum of `base`: more than half of it, or exactly half including
/// `base`'s lowest node id.
pub fn is_quorum(base: &BTreeSet<NodeId>, set: &BTreeSet<NodeId>) -> bool {
    let present = base.iter().filter(|n| set.contains(*n)).count();
    let lowest_present = base.first().is_some_and(|n| set.contains(n));
    2 * present > base.len() || (2 * present == base.len() && lowest_present)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeId {
        NodeId::new(id).unwrap()
    }

    fn set(ids: &[&str]) -> BTreeSet<NodeId> {
        ids.iter().map(|id| node(id)).collect()
    }

    #[test]
    fn quorum_is_a_majority_and_ties_go_to_the_lowest_node_id() {
        let five = set(&["a", "b", "c", "d", "e"]);
        assert!(is_quorum(&five, &set(&["c", "d", "e"])));
        assert!(!is_quorum(&five, &set(&["a", "b"])));
        let four = set(&["a", "b", "c", "d"]);
        assert!(is_quorum(&four, &set(&["a", "d"])));
        assert!(!is_quorum(&four, &set(&["b", "c"])));
        assert!(is_quorum(&set(&["a"]), &set(&["a"])));
        let two = set(&["a", "b"]);
        assert!(is_quorum(&two, &set(&["a"])));
        assert!(!is_quorum(&two, &set(&["b"])));
        // Members outside the base do not count.
        assert!(!is_quorum(&four, &set(&["b", "x", "y"])));
    }

    #[test]
    fn a_lone_node_is_its_own_quorum_and_serves_at_once() {
        let me = Member::alive(node("a"), "a:1", ["counter"]).unwrap();
        let mut f = Fencing::new(me, LeaseConfig::default(), false, Duration::ZERO);
        assert!(f.tick(Duration::ZERO).is_empty());
        assert!(f.is_serving(Duration::from_millis(1)));
        assert!(f.take_events().contains(&FencingEvent::LeaseAcquired));
    }

    #[test]
    fn a_node_with_seeds_serves_nothing_until_it_has_heard_from_its_cluster() {
        let me = Member::alive(node("b"), "b:1", ["counter"]).unwrap();
        let mut f = Fencing::new(me, LeaseConfig::default(), true, Duration::ZERO);
        f.tick(Duration::ZERO);
        assert!(!f.is_serving(Duration::from_millis(1)));
        let (refusal, message) = f.refusal(Duration::from_millis(1)).unwrap();
        assert_eq!(refusal, Refusal::NotReady);
        assert!(message.contains("not learned"));
    }

    #[test]
    fn a_lone_node_told_it_joins_a_cluster_stops_serving_until_it_hears_from_it() {
        let me = Member::alive(node("b"), "b:1", ["counter"]).unwrap();
        let mut f = Fencing::new(me, LeaseConfig::default(), false, Duration::ZERO);
        f.tick(Duration::ZERO);
        assert!(f.is_serving(Duration::from_millis(1)));
        f.expect_cluster(Duration::from_millis(2));
        assert!(!f.is_serving(Duration::from_millis(3)));
    }
}
