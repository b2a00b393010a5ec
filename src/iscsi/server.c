/* The iSCSI target: one epoll thread owns the listening socket, every
 * connection and every PDU; a worker pool runs scsi_lu_exec() and hands
 * finished tasks back through an eventfd (tgt's design).  Sessions have one
 * connection each and run at ErrorRecoveryLevel 0: any protocol error ends
 * the connection it happened on, and only that one. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/common.h"
#include "iscsi/internal.h"

#define N_WORKERS 4                 /* default worker threads */
#define MAX_WORKERS 64
#define TX_HIGH (8u << 20)          /* stop reading a conn above this backlog */
#define TX_LOW (1u << 20)
#define LOGIN_TIMEOUT_S 30
#define NOP_IDLE_S 30               /* ping an idle session after this */
#define NOP_TIMEOUT_S 30            /* ...and drop it if no answer follows */
#define TX_STALL_S 60               /* drop a conn whose initiator reads nothing this long */
#define MAX_TASKS_PER_CONN (2 * ISCSI_QUEUE_DEPTH)

/* Memory for command data (docs/ISCSI.md "Memory").  WRITE data is
 * buffered whole until the command runs; a connection may always buffer
 * WBUF_RESERVE (one largest command), more only while all connections
 * together hold less than WBUF_SRV_MAX, and never more than WBUF_CONN_MAX:
 * beyond, TASK SET FULL.  READ data streams in pieces of at most
 * DIN_PIECE: a READ holds one piece buffer from its first piece to its
 * last; data-in of any other command is at most DIN_OTHER bytes.  A
 * connection may hold DIN_CONN bytes of such buffers, and always
 * DIN_RESERVE, more only while all connections together hold less than
 * DIN_SRV; a command that does not fit waits (and the connection is not
 * read) until a buffer is sent and freed.  So an initiator that never
 * reads its socket pins at most DIN_CONN per connection, and the others
 * keep their reserve even when every byte of DIN_SRV is pinned. */
#define WBUF_CONN_MAX (256u << 20)
#define WBUF_SRV_MAX (1024ull << 20)
#define WBUF_RESERVE ISCSI_MAX_XFER
#define DIN_PIECE (1u << 20)
#define DIN_OTHER (256u << 10)
#define DIN_CONN (8u << 20)
#define DIN_SRV (128u << 20)
#define DIN_RESERVE (256u << 10)

/* T_COLLECT: a WRITE receiving data; T_WAITBUF: waiting for a data-in
 * buffer; T_QUEUED: with the workers; T_SENDING: a READ piece being sent
 * (the next one is read once it is); T_SENT: that piece is sent, the task
 * continues at the end of the flush; T_DONE: answered. */
enum task_state { T_COLLECT, T_WAITBUF, T_QUEUED, T_SENDING, T_SENT, T_DONE };

struct tmf;

struct task {
	struct task *next, *prev;   /* conn's task list */
	struct task *qnext;         /* work / done queues */
	struct conn *c;
	uint32_t itt, cmd_sn, edtl;
	uint8_t flags;
	uint8_t lunraw[8];
	uint64_t lun;
	struct lun_ent *le;         /* NULL: answered by the target itself */
	uint8_t cdb[260];
	uint8_t cdb_len;
	uint32_t xfer_len;          /* what the CDB asks for */
	uint8_t *buf;
	uint32_t buf_len;           /* data-in bytes of buf, counted in din_mem */
	uint32_t din_total;         /* data-in the command may produce (<= edtl) */
	uint32_t din_off;           /* transfer offset of the piece in buf */
	uint32_t in_burst;          /* Data-In bytes sent in the current burst */
	bool piece;                 /* a READ streamed piece by piece */
	struct task *wnext;         /* conn's queue of tasks waiting for a buffer */
	uint32_t received;          /* Data-Out bytes collected */
	uint32_t r2t_next, r2t_out, r2t_sn;
	uint32_t data_sn;           /* next Data-In DataSN */
	uint32_t out_data_sn;       /* expected Data-Out DataSN in this sequence */
	enum task_state state;
	bool aborted;
	bool cancel;                /* under srv->lock: a worker skips it */
	struct tmf *tmf;
	struct scsi_cmd cmd;
};

struct tmf {
	struct conn *c;
	uint32_t itt;
	uint8_t response;
	unsigned pending;
	bool cold;                  /* TARGET COLD RESET: drop the sessions after */
	struct target *tgt;
};

struct txb {
	struct txb *next;
	uint8_t hdr[ISCSI_BHS_LEN + 4];
	uint8_t tail[8];
	struct iovec iov[3];
	int iovcnt;
	size_t total, sent;
	void *owned;                /* freed once sent */
	struct task *task;          /* freed once sent */
	struct task *piece_of;      /* last PDU of a READ piece: continue it once sent */
	bool close_after;
};

enum conn_state { C_LOGIN, C_FULL, C_DEAD };

struct conn {
	struct conn *next, *prev;   /* srv->conns */
	struct conn *dnext;         /* dirty list */
	bool dirty;
	struct conn *gnext;         /* graveyard: freed at the end of a loop pass */
	bool in_grave;
	struct iscsi_server *srv;
	int fd;
	enum conn_state state;
	char peer[64], local[64];
	uint32_t ev;                /* epoll events registered */
	bool rx_paused;
	/* receive */
	uint8_t *rx;
	size_t rx_len, rx_cap;
	/* transmit */
	struct txb *tx_head, *tx_tail;
	size_t tx_bytes;
	uint64_t tx_progress_ns;    /* last time the queue moved (or filled) */
	bool close_pending;
	bool piece_sent;            /* some task is in T_SENT */
	/* data-in buffers (loop thread) */
	uint64_t din_mem;
	struct task *wq_head, *wq_tail; /* waiting for a buffer, in order */
	bool hungry;                /* on srv->hungry */
	struct conn *hnext;
	struct sess_ent *sess;      /* listed in srv->sessions while logged in */
	/* session */
	struct login_state ls;
	struct iscsi_params params;
	bool discovery;
	struct target *tgt;
	char initiator[ISCSI_NAME_MAX + 1];
	char port_name[ISCSI_NAME_MAX + 24]; /* "IQN,i,0xISID" for the SCSI layer */
	uint64_t nexus;
	uint16_t tsih;
	uint32_t exp_cmd_sn, max_cmd_sn, stat_sn;
	uint64_t deadline_ns;       /* login timeout */
	uint64_t last_rx_ns;
	uint32_t nop_ttt;           /* outstanding keepalive ping, or reserved */
	uint64_t nop_sent_ns;
	/* tasks */
	struct task *tasks;
	unsigned ntasks;
	uint64_t buffered;
	unsigned refs;              /* tasks in workers + pending TMFs */
	uint32_t next_ttt;
	/* text continuation */
	char *text_rsp;
	size_t text_rsp_len, text_rsp_off;
	uint32_t text_ttt;
	char *text_req;
	size_t text_req_len;
};

struct iscsi_server {
	pthread_mutex_t lock;       /* targets, LUNs, stats, work/done queues */
	pthread_cond_t cond;        /* LUN inflight reaches 0 */
	pthread_cond_t wcond;       /* work queued */
	struct target *targets;
	int lfd, efd, done_fd, ctl_fd;
	int port;
	pthread_t loop;
	pthread_t workers[MAX_WORKERS];
	unsigned n_workers;
	struct task *wq_head, *wq_tail;
	struct task *dq_head, *dq_tail;
	bool wstop;
	bool stop;                  /* loop: shut down */
	unsigned queued;            /* tasks in workers (loop thread) */
	struct conn *conns;
	struct conn *dirty;
	struct conn *grave;
	uint16_t next_tsih;
	struct iscsi_stats stats;
	struct chap_cred disc;      /* discovery authentication (under lock) */
	/* command data in memory: changed by the loop thread only, read by
	 * iscsi_server_stats() (hence atomic) */
	uint64_t wbuf_mem, din_mem;
	struct conn *hungry;        /* conns with tasks waiting for a buffer */
	bool din_kick;              /* a buffer was freed: admit waiting tasks */
	/* logged-in sessions, for iscsi_sessions(): a lock of its own that
	 * the loop takes only at login and close, so a query never waits for
	 * I/O and never holds up a command */
	pthread_mutex_t sess_lock;
	struct sess_ent *sessions;
};

struct sess_ent {
	struct iscsi_session_info info;
	struct sess_ent *next, *prev;
};

static void conn_close(struct conn *c, const char *why);
static void task_complete(struct task *t);
static void task_free(struct task *t);
static void continue_pieces(struct conn *c);

/* ---- small helpers ------------------------------------------------------ */
static void sense_fixed(struct scsi_cmd *cmd, uint8_t key, uint8_t asc, uint8_t ascq)
{
	memset(cmd->sense, 0, 18);
	cmd->sense[0] = 0x70;
	cmd->sense[2] = key;
	cmd->sense[7] = 10;
	cmd->sense[12] = asc;
	cmd->sense[13] = ascq;
	cmd->sense_len = 18;
	cmd->status = SCSI_STATUS_CHECK_CONDITION;
	cmd->data_in_len = 0;
}

static void fmt_addr(const struct sockaddr_storage *ss, char *out, size_t cap)
{
	char host[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)ss;
		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
		port = ntohs(s4->sin_port);
		snprintf(out, cap, "%s:%d", host, port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
		port = ntohs(s6->sin6_port);
		snprintf(out, cap, "[%s]:%d", host, port);
	} else {
		snprintf(out, cap, "?");
	}
}

static void mark_dirty(struct conn *c)
{
	if (c->dirty || c->state == C_DEAD)
		return;
	c->dirty = true;
	c->dnext = c->srv->dirty;
	c->srv->dirty = c;
}

static void epoll_set(struct conn *c, uint32_t ev)
{
	if (c->ev == ev || c->fd < 0)
		return;
	struct epoll_event e = { .events = ev, .data.ptr = c };
	if (epoll_ctl(c->srv->efd, EPOLL_CTL_MOD, c->fd, &e) == 0)
		c->ev = ev;
}

/* ---- LUN references ------------------------------------------------------ */
static void lun_release(struct iscsi_server *srv, struct lun_ent *le)
{
	if (!le)
		return;
	pthread_mutex_lock(&srv->lock);
	if (--le->inflight == 0 && le->removed)
		pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->lock);
}

struct target *server_target_get(struct iscsi_server *srv, const char *name)
{
	pthread_mutex_lock(&srv->lock);
	struct target *t = srv->targets;
	while (t && strcasecmp(t->name, name) != 0) /* iSCSI names fold case */
		t = t->next;
	if (t)
		t->refs++;
	pthread_mutex_unlock(&srv->lock);
	return t;
}

void server_target_put(struct iscsi_server *srv, struct target *t)
{
	if (!t)
		return;
	pthread_mutex_lock(&srv->lock);
	bool gone = --t->refs == 0 && t->removed;
	pthread_mutex_unlock(&srv->lock);
	if (gone)
		free(t);
}

/* A discovery session may see target t (SendTargets): no CHAP, or the
 * session proved t's own credentials.  (srv->lock held.) */
static bool target_visible(const struct target *t, const struct chap_cred *auth)
{
	if (!t->cred.set || !auth)
		return true;
	return auth->set && strcmp(auth->user, t->cred.user) == 0 &&
	       strcmp(auth->secret, t->cred.secret) == 0;
}

int server_send_targets(struct iscsi_server *srv, const char *only, const char *addr,
                        const struct chap_cred *auth, char *buf, size_t cap, size_t *len)
{
	char a[80];
	snprintf(a, sizeof(a), "%s,1", addr);
	int r = 0;
	pthread_mutex_lock(&srv->lock);
	for (struct target *t = srv->targets; t && r == 0; t = t->next) {
		if ((only && strcasecmp(only, t->name) != 0) || !target_visible(t, auth))
			continue;
		r = iscsi_text_add(buf, cap, len, "TargetName", t->name);
		if (r == 0)
			r = iscsi_text_add(buf, cap, len, "TargetAddress", a);
	}
	pthread_mutex_unlock(&srv->lock);
	return r;
}

void server_discovery_auth(struct iscsi_server *srv, bool *required, bool *possible)
{
	pthread_mutex_lock(&srv->lock);
	*required = srv->disc.set;
	*possible = srv->disc.set;
	for (struct target *t = srv->targets; t && !*possible; t = t->next)
		*possible = t->cred.set;
	pthread_mutex_unlock(&srv->lock);
}

static bool cred_proves(const struct chap_cred *c, const char *user, uint8_t id,
                        const uint8_t *chal, size_t chal_len, const uint8_t *resp, size_t resp_len)
{
	return c->set && strcmp(c->user, user) == 0 &&
	       chap_verify(id, c->secret, chal, chal_len, resp, resp_len) == 1;
}

bool server_chap_match(struct iscsi_server *srv, const char *user, uint8_t id,
                       const uint8_t *chal, size_t chal_len, const uint8_t *resp, size_t resp_len,
                       struct chap_cred *out)
{
	const struct chap_cred *hit = NULL;
	pthread_mutex_lock(&srv->lock);
	if (cred_proves(&srv->disc, user, id, chal, chal_len, resp, resp_len))
		hit = &srv->disc;
	for (struct target *t = srv->targets; t && !hit; t = t->next)
		if (cred_proves(&t->cred, user, id, chal, chal_len, resp, resp_len))
			hit = &t->cred;
	if (hit)
		*out = *hit;
	bool found = hit != NULL;
	pthread_mutex_unlock(&srv->lock);
	return found;
}

/* ---- transmit ------------------------------------------------------------ */
static void txb_free(struct txb *b)
{
	free(b->owned);
	if (b->task)
		task_free(b->task);
	free(b);
}

/* Queues a PDU.  data (dlen bytes) must stay valid until it is sent: it is
 * either `owned` (freed after) or inside `task` (freed after). */
static void send_pdu(struct conn *c, uint8_t bhs[ISCSI_BHS_LEN], const void *data, uint32_t dlen,
                     void *owned, struct task *task)
{
	if (c->state == C_DEAD) {
		free(owned);
		if (task)
			task_free(task);
		return;
	}
	struct txb *b = calloc(1, sizeof(*b));
	if (!b) {
		free(owned);
		if (task)
			task_free(task);
		conn_close(c, "out of memory");
		return;
	}
	size_t h = iscsi_pdu_hdr_finish(bhs, dlen, &c->params.dg, b->hdr);
	b->iov[0] = (struct iovec){ b->hdr, h };
	b->iovcnt = 1;
	b->total = h;
	if (dlen) {
		size_t t = iscsi_pdu_tail(data, dlen, &c->params.dg, b->tail);
		b->iov[1] = (struct iovec){ (void *)data, dlen };
		b->iovcnt = 2;
		b->total += dlen;
		if (t) {
			b->iov[2] = (struct iovec){ b->tail, t };
			b->iovcnt = 3;
			b->total += t;
		}
	}
	b->owned = owned;
	b->task = task;
	if (!c->tx_head)
		c->tx_progress_ns = now_mono_ns();
	if (c->tx_tail)
		c->tx_tail->next = b;
	else
		c->tx_head = b;
	c->tx_tail = b;
	c->tx_bytes += b->total;
	mark_dirty(c);
}

static void conn_flush(struct conn *c)
{
	while (c->tx_head && c->state != C_DEAD) {
		struct iovec iov[64];
		int n = 0;
		for (struct txb *b = c->tx_head; b && n + 3 <= (int)ARRAY_SIZE(iov); b = b->next) {
			size_t skip = b == c->tx_head ? b->sent : 0;
			for (int i = 0; i < b->iovcnt; i++) {
				if (skip >= b->iov[i].iov_len) {
					skip -= b->iov[i].iov_len;
					continue;
				}
				iov[n].iov_base = (uint8_t *)b->iov[i].iov_base + skip;
				iov[n].iov_len = b->iov[i].iov_len - skip;
				skip = 0;
				n++;
			}
			if (b->close_after)
				break;
		}
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n };
		ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			conn_close(c, strerror(errno));
			return;
		}
		size_t left = (size_t)w;
		if (w > 0)
			c->tx_progress_ns = now_mono_ns();
		while (c->tx_head && left) {
			struct txb *b = c->tx_head;
			size_t need = b->total - b->sent;
			if (left < need) {
				b->sent += left;
				left = 0;
				break;
			}
			left -= need;
			c->tx_bytes -= b->total;
			c->tx_head = b->next;
			if (!c->tx_head)
				c->tx_tail = NULL;
			bool close_now = b->close_after;
			if (b->piece_of) {
				b->piece_of->state = T_SENT;
				c->piece_sent = true;
			}
			txb_free(b);
			if (close_now) {
				conn_close(c, NULL);
				return;
			}
		}
	}
	if (c->state != C_DEAD && c->piece_sent)
		continue_pieces(c);
	if (c->state == C_DEAD)
		return;
	uint32_t ev = EPOLLRDHUP;
	if (c->tx_head)
		ev |= EPOLLOUT;
	/* Unsent data past the bound, or commands waiting for a data-in
	 * buffer: read no new commands until it drains. */
	if (c->rx_paused && c->tx_bytes < TX_LOW && !c->wq_head)
		c->rx_paused = false;
	else if (!c->rx_paused && (c->tx_bytes > TX_HIGH || c->wq_head))
		c->rx_paused = true;
	if (!c->rx_paused && !c->close_pending)
		ev |= EPOLLIN;
	epoll_set(c, ev);
}

static void flush_dirty(struct iscsi_server *srv)
{
	while (srv->dirty) {
		struct conn *c = srv->dirty;
		srv->dirty = c->dnext;
		c->dirty = false;
		if (c->state != C_DEAD)
			conn_flush(c);
	}
}

static void update_max_cmd_sn(struct conn *c)
{
	uint32_t m = c->exp_cmd_sn + ISCSI_QUEUE_DEPTH - 1 -
	             MIN(c->ntasks, ISCSI_QUEUE_DEPTH - 1);
	/* MaxCmdSN never moves backwards (RFC 7143 4.2.2.1). */
	if (sn_lt(c->max_cmd_sn, m))
		c->max_cmd_sn = m;
}

static void put_sns(struct conn *c, uint8_t *stat, uint8_t *exp, uint8_t *max, bool advance)
{
	update_max_cmd_sn(c);
	be32_put(stat, c->stat_sn);
	if (advance)
		c->stat_sn++;
	be32_put(exp, c->exp_cmd_sn);
	be32_put(max, c->max_cmd_sn);
}

static void send_reject(struct conn *c, const uint8_t *bhs, uint8_t reason)
{
	uint8_t *copy = malloc(ISCSI_BHS_LEN);
	if (!copy) {
		conn_close(c, "out of memory");
		return;
	}
	memcpy(copy, bhs, ISCSI_BHS_LEN);
	struct iscsi_bhs_reject r;
	memset(&r, 0, sizeof(r));
	r.opcode = ISCSI_OP_REJECT;
	r.flags = ISCSI_FLAG_FINAL;
	r.reason = reason;
	be32_put(r.all_ones, ISCSI_RSVD_TAG);
	put_sns(c, r.stat_sn, r.exp_cmd_sn, r.max_cmd_sn, true);
	send_pdu(c, (uint8_t *)&r, copy, ISCSI_BHS_LEN, copy, NULL);
}

/* ---- tasks --------------------------------------------------------------- */
static void wbuf_add(struct conn *c, uint32_t n)
{
	c->buffered += n;
	__atomic_add_fetch(&c->srv->wbuf_mem, n, __ATOMIC_RELAXED);
}

static void wbuf_sub(struct conn *c, uint32_t n)
{
	c->buffered -= n;
	__atomic_sub_fetch(&c->srv->wbuf_mem, n, __ATOMIC_RELAXED);
}

static void task_unlink(struct task *t)
{
	struct conn *c = t->c;
	if (t->prev)
		t->prev->next = t->next;
	else if (c->tasks == t)
		c->tasks = t->next;
	if (t->next)
		t->next->prev = t->prev;
	t->next = t->prev = NULL;
	c->ntasks--;
	if (t->flags & ISCSI_CMD_WRITE)
		wbuf_sub(c, t->edtl);
	update_max_cmd_sn(c);
}

/* ---- data-in buffers ------------------------------------------------------ */
/* Gives t its data-in buffer if the connection's and the server's budget
 * allow (see DIN_* above): 1 done, 0 it must wait, -ENOMEM.  A READ piece
 * may come out shorter than DIN_PIECE (whole blocks) when only the
 * connection's reserve is left. */
static int din_admit(struct conn *c, struct task *t)
{
	struct iscsi_server *srv = c->srv;
	uint32_t len = t->piece ? MIN(t->din_total, DIN_PIECE) : t->din_total;
	if (c->din_mem + len > DIN_CONN)
		return 0;
	if (srv->din_mem + len > DIN_SRV) {
		uint64_t room = c->din_mem < DIN_RESERVE ? DIN_RESERVE - c->din_mem : 0;
		if (len > room) {
			if (!t->piece)
				return 0;
			uint32_t bs = scsi_lu_block_size(t->le->lu);
			len = (uint32_t)room;
			len -= bs ? len % bs : len;
			if (!len)
				return 0;
		}
	}
	t->buf = malloc(len);
	if (!t->buf)
		return -ENOMEM;
	t->buf_len = len;
	c->din_mem += len;
	__atomic_add_fetch(&srv->din_mem, len, __ATOMIC_RELAXED);
	return 1;
}

/* Returns t's buffer to the budget; the loop then admits waiting tasks. */
static void din_release(struct task *t)
{
	if (!t->buf_len)
		return;
	struct conn *c = t->c;
	c->din_mem -= t->buf_len;
	__atomic_sub_fetch(&c->srv->din_mem, t->buf_len, __ATOMIC_RELAXED);
	t->buf_len = 0;
	c->srv->din_kick = true;
	mark_dirty(c); /* its own waiters and read pause */
}

static void din_wait(struct conn *c, struct task *t)
{
	t->state = T_WAITBUF;
	t->wnext = NULL;
	if (c->wq_tail)
		c->wq_tail->wnext = t;
	else
		c->wq_head = t;
	c->wq_tail = t;
	if (!c->hungry) {
		c->hungry = true;
		c->hnext = NULL;
		struct conn **pp = &c->srv->hungry;
		while (*pp)
			pp = &(*pp)->hnext;
		*pp = c;
	}
}

/* Takes a waiting task off its connection's queue (aborted, LUN gone). */
static void din_unwait(struct conn *c, struct task *t)
{
	struct task *prev = NULL;
	for (struct task *w = c->wq_head; w; prev = w, w = w->wnext) {
		if (w != t)
			continue;
		if (prev)
			prev->wnext = w->wnext;
		else
			c->wq_head = w->wnext;
		if (c->wq_tail == w)
			c->wq_tail = prev;
		w->wnext = NULL;
		return;
	}
}

static void hungry_remove(struct conn *c)
{
	if (!c->hungry)
		return;
	for (struct conn **pp = &c->srv->hungry; *pp; pp = &(*pp)->hnext) {
		if (*pp == c) {
			*pp = c->hnext;
			break;
		}
	}
	c->hungry = false;
	c->hnext = NULL;
}

static void task_submit(struct task *t);

/* Admits waiting tasks, connection by connection in the order they began
 * to wait, each connection's in command order. */
static void din_kick(struct iscsi_server *srv)
{
	srv->din_kick = false;
	struct conn **pp = &srv->hungry;
	while (*pp) {
		struct conn *c = *pp;
		while (c->state != C_DEAD && c->wq_head && din_admit(c, c->wq_head) > 0) {
			struct task *t = c->wq_head;
			c->wq_head = t->wnext;
			if (!c->wq_head)
				c->wq_tail = NULL;
			t->wnext = NULL;
			mark_dirty(c); /* may resume reading */
			task_submit(t);
		}
		if (*pp != c)
			continue; /* closed meanwhile: hungry_remove() unlinked it */
		if (c->state == C_DEAD || !c->wq_head) {
			*pp = c->hnext;
			c->hungry = false;
			c->hnext = NULL;
		} else {
			pp = &c->hnext;
		}
	}
}

/* An aborted task still waiting for a worker is not run at all: after a
 * session reinstatement the new session shares the old one's I_T nexus, so
 * a stale command must not act on it (one already running cannot be
 * stopped). */
static void task_cancel(struct task *t)
{
	pthread_mutex_lock(&t->c->srv->lock);
	t->cancel = true;
	pthread_mutex_unlock(&t->c->srv->lock);
}

static void task_free(struct task *t)
{
	din_release(t);
	free(t->buf);
	free(t);
}

static struct task *task_find(struct conn *c, uint32_t itt)
{
	for (struct task *t = c->tasks; t; t = t->next)
		if (t->itt == itt)
			return t;
	return NULL;
}

static void send_r2ts(struct conn *c, struct task *t)
{
	while (t->r2t_out < c->params.max_r2t && t->r2t_next < t->edtl) {
		uint32_t len = MIN(c->params.max_burst, t->edtl - t->r2t_next);
		struct iscsi_bhs_r2t r;
		memset(&r, 0, sizeof(r));
		r.opcode = ISCSI_OP_R2T;
		r.flags = ISCSI_FLAG_FINAL;
		memcpy(r.lun, t->lunraw, 8);
		be32_put(r.itt, t->itt);
		uint32_t ttt = c->next_ttt++;
		if (ttt == ISCSI_RSVD_TAG)
			ttt = c->next_ttt++;
		be32_put(r.ttt, ttt);
		put_sns(c, r.stat_sn, r.exp_cmd_sn, r.max_cmd_sn, false);
		be32_put(r.r2t_sn, t->r2t_sn++);
		be32_put(r.buffer_offset, t->r2t_next);
		be32_put(r.desired_len, len);
		send_pdu(c, (uint8_t *)&r, NULL, 0, NULL, NULL);
		t->r2t_next += len;
		t->r2t_out++;
	}
}

/* iSCSI: when EDTL is shorter than a WRITE's transfer length, only the
 * EDTL bytes are written (what libiscsi's residual tests and tgt do); the
 * residual still reports the difference (task_respond works it out from
 * xfer_len, which keeps the CDB's original length).  Rewrites the transfer
 * length of the task's CDB copy to the whole blocks EDTL covers, which may
 * be 0: the command still goes to the SCSI layer, which runs every check
 * (unit attentions, reservations, write protection, LBA range) and treats
 * 0 blocks as a write of nothing.  WRITE(6) cannot say 0 blocks (0 means
 * 256), so a WRITE(6) covering less than a block becomes the equivalent
 * WRITE(10) (same LBA, control byte; WRITE(6) has no other fields).
 * Returns the block count, or -1 for a CDB this does not apply to. */
static long clamp_write(struct task *t)
{
	uint8_t *cdb = t->cdb;
	uint32_t bs = scsi_lu_block_size(t->le->lu);
	if (!bs)
		return -1;
	uint32_t nb = t->edtl / bs;
	switch (cdb[0]) {
	case 0x0a: /* WRITE 6 */
		if (nb == 0) {
			uint32_t lba = (uint32_t)(cdb[1] & 0x1f) << 16 | (uint32_t)cdb[2] << 8 | cdb[3];
			uint8_t control = cdb[5];
			memset(cdb, 0, 10);
			cdb[0] = 0x2a;
			be32_put(cdb + 2, lba);
			cdb[9] = control;
			t->cdb_len = 10;
			return 0;
		}
		cdb[4] = (uint8_t)nb; /* nb < 256 here: EDTL < the CDB's length */
		return nb;
	case 0x2a: case 0x2e: /* WRITE 10, WRITE AND VERIFY 10 */
		be16_put(cdb + 7, (uint16_t)nb);
		return nb;
	case 0xaa: case 0xae: /* 12 */
		be32_put(cdb + 6, nb);
		return nb;
	case 0x8a: case 0x8e: /* 16 */
		be32_put(cdb + 10, nb);
		return nb;
	default:
		return -1;
	}
}

static void task_submit(struct task *t)
{
	struct conn *c = t->c;
	struct iscsi_server *srv = c->srv;
	struct scsi_cmd *cmd = &t->cmd;
	/* Even a write of less than one block goes to the SCSI layer (as a
	 * write of 0 blocks): its checks decide the status, not the transport. */
	if (t->le && t->xfer_len > t->edtl)
		clamp_write(t);
	cmd->cdb = t->cdb;
	cmd->cdb_len = t->cdb_len;
	cmd->nexus = c->nexus;
	cmd->initiator = c->port_name;
	if (t->flags & ISCSI_CMD_WRITE) {
		cmd->data_out = t->buf;
		cmd->data_out_len = t->received;
	}
	if (t->flags & ISCSI_CMD_READ) {
		cmd->data_in = t->buf;
		cmd->data_in_cap = t->piece ? MIN(t->buf_len, t->din_total - t->din_off) : t->buf_len;
	}
	if (!t->le) {
		/* Target-level answers need no disk: run them right here. */
		if (t->cdb[0] == 0xa0) {
			uint64_t *luns = NULL;
			size_t n = 0, cap = 0;
			pthread_mutex_lock(&srv->lock);
			for (struct lun_ent *e = c->tgt->luns; e; e = e->next)
				cap++;
			luns = malloc((cap + 1) * sizeof(*luns));
			for (struct lun_ent *e = c->tgt->luns; luns && e; e = e->next)
				luns[n++] = e->lun;
			pthread_mutex_unlock(&srv->lock);
			/* sorted, so the answer is stable */
			for (size_t i = 1; i < n; i++)
				for (size_t j = i; j > 0 && luns[j - 1] > luns[j]; j--) {
					uint64_t x = luns[j];
					luns[j] = luns[j - 1];
					luns[j - 1] = x;
				}
			if (luns)
				scsi_report_luns(luns, n, cmd);
			else
				sense_fixed(cmd, 0x0b, 0x55, 0x03); /* insufficient resources */
			free(luns);
		} else {
			scsi_no_lun(cmd);
		}
		t->state = T_DONE;
		task_complete(t);
		return;
	}
	t->state = T_QUEUED;
	c->refs++;
	srv->queued++;
	pthread_mutex_lock(&srv->lock);
	t->qnext = NULL;
	if (srv->wq_tail)
		srv->wq_tail->qnext = t;
	else
		srv->wq_head = t;
	srv->wq_tail = t;
	pthread_cond_signal(&srv->wcond);
	pthread_mutex_unlock(&srv->lock);
}

/* Queues Data-In PDUs for len bytes of t->buf, which sit at transfer
 * offset t->din_off.  Bursts end (F bit) at MaxBurstLength across pieces.
 * final: these are the last data of the command; with status (GOOD, no
 * sense: phase collapse) the last PDU carries it and owns t.  Otherwise
 * (a piece of a READ that goes on) the last PDU continues t once sent.
 * False when the connection died meanwhile (t is then freed). */
static bool send_data_in(struct task *t, uint32_t len, bool final, bool status, uint8_t rflags,
                         uint32_t residual)
{
	struct conn *c = t->c;
	uint32_t seg = c->params.max_xmit_dsl;
	uint32_t burst = c->params.max_burst;
	for (uint32_t off = 0; off < len;) {
		uint32_t n = MIN(seg, len - off);
		n = MIN(n, burst - t->in_burst);
		bool last = off + n == len;
		struct iscsi_bhs_data d;
		memset(&d, 0, sizeof(d));
		d.opcode = ISCSI_OP_DATA_IN;
		t->in_burst += n;
		if ((last && final) || t->in_burst == burst) {
			d.flags |= ISCSI_FLAG_FINAL;
			t->in_burst = 0;
		}
		if (last && final && status) {
			d.flags |= ISCSI_DATAIN_STATUS | (uint8_t)(rflags & (ISCSI_RSP_OVERFLOW |
			                                                      ISCSI_RSP_UNDERFLOW));
			d.status = t->cmd.status;
			be32_put(d.residual, residual);
			put_sns(c, d.stat_sn, d.exp_cmd_sn, d.max_cmd_sn, true);
		} else {
			/* Only the status-bearing PDU carries and advances StatSN. */
			update_max_cmd_sn(c);
			be32_put(d.exp_cmd_sn, c->exp_cmd_sn);
			be32_put(d.max_cmd_sn, c->max_cmd_sn);
		}
		memcpy(d.lun, t->lunraw, 8);
		be32_put(d.itt, t->itt);
		be32_put(d.ttt, ISCSI_RSVD_TAG);
		be32_put(d.data_sn, t->data_sn++);
		be32_put(d.buffer_offset, t->din_off + off);
		off += n;
		send_pdu(c, (uint8_t *)&d, t->buf + off - n, n, NULL,
		         last && final && status ? t : NULL);
		if (c->state == C_DEAD)
			return false;
		if (last && !final)
			c->tx_tail->piece_of = t;
	}
	return true;
}

/* Sends Data-In (with phase-collapsed status when possible) and/or the
 * SCSI Response of a finished task, then frees it once sent. */
static void task_respond(struct task *t)
{
	struct conn *c = t->c;
	struct scsi_cmd *cmd = &t->cmd;
	uint8_t rflags = 0;
	uint32_t residual = 0;
	/* this piece's data, and all the command sent */
	uint32_t piece = 0, din = 0;
	if (t->flags & ISCSI_CMD_READ) {
		din = MIN(t->din_off + cmd->data_in_len, t->edtl);
		piece = din > t->din_off ? din - t->din_off : 0;
	}

	if (t->xfer_len > t->edtl) {
		rflags = ISCSI_RSP_OVERFLOW;
		residual = t->xfer_len - t->edtl;
	} else if (t->flags & ISCSI_CMD_READ) {
		if (din < t->edtl) {
			rflags = ISCSI_RSP_UNDERFLOW;
			residual = t->edtl - din;
		}
	} else if (t->edtl > t->xfer_len) {
		rflags = ISCSI_RSP_UNDERFLOW;
		residual = t->edtl - t->xfer_len;
	}
	bool collapse = cmd->status == SCSI_STATUS_GOOD && cmd->sense_len == 0 && piece > 0;
	t->state = T_DONE;
	if (piece && !send_data_in(t, piece, true, collapse, rflags, residual))
		return;
	pthread_mutex_lock(&c->srv->lock);
	c->srv->stats.commands++;
	pthread_mutex_unlock(&c->srv->lock);
	if (collapse)
		return;
	struct iscsi_bhs_scsi_rsp r;
	memset(&r, 0, sizeof(r));
	r.opcode = ISCSI_OP_SCSI_RSP;
	r.flags = ISCSI_FLAG_FINAL | rflags;
	r.response = 0;
	r.status = cmd->status;
	be32_put(r.itt, t->itt);
	put_sns(c, r.stat_sn, r.exp_cmd_sn, r.max_cmd_sn, true);
	be32_put(r.exp_data_sn, (t->flags & ISCSI_CMD_READ) ? t->data_sn : t->r2t_sn);
	be32_put(r.residual, residual);
	uint8_t *sense = NULL;
	uint32_t slen = 0;
	if (cmd->sense_len) {
		slen = 2u + MIN(cmd->sense_len, SCSI_SENSE_MAX);
		sense = malloc(slen);
		if (!sense) {
			task_free(t);
			conn_close(c, "out of memory");
			return;
		}
		be16_put(sense, (uint16_t)(slen - 2));
		memcpy(sense + 2, cmd->sense, slen - 2);
	}
	send_pdu(c, (uint8_t *)&r, sense, slen, sense, t);
}

/* A piece of a streamed READ is read and more follow: send it; the task
 * stays linked (T_SENDING) and goes on once the piece is sent. */
static bool task_more(const struct task *t)
{
	const struct scsi_cmd *cmd = &t->cmd;
	return t->piece && t->le && !t->aborted && cmd->status == SCSI_STATUS_GOOD &&
	       !cmd->sense_len && cmd->data_in_len == cmd->data_in_cap &&
	       t->din_off + cmd->data_in_len < t->din_total;
}

/* iscsi_lun_remove() was called: a streamed READ must not go on holding
 * the LUN (it would wait for an initiator that may never read). */
static bool lun_gone(struct iscsi_server *srv, const struct lun_ent *le)
{
	pthread_mutex_lock(&srv->lock);
	bool gone = le->removed;
	pthread_mutex_unlock(&srv->lock);
	return gone;
}

/* A piece was sent: read the next one, or end the task (aborted, or its
 * LUN removed meanwhile). */
static void task_piece_next(struct task *t)
{
	t->din_off += t->cmd.data_in_len;
	t->cmd.data_in_len = 0;
	if (!t->aborted && t->le && !lun_gone(t->c->srv, t->le)) {
		task_submit(t);
		return;
	}
	if (!t->aborted)
		scsi_no_lun(&t->cmd); /* the LUN went away under the READ */
	t->state = T_DONE;
	task_complete(t);
}

/* Continues the tasks whose piece was sent (T_SENT). */
static void continue_pieces(struct conn *c)
{
	c->piece_sent = false;
	struct task *t = c->tasks;
	while (t && c->state != C_DEAD) {
		struct task *n = t->next;
		if (t->state == T_SENT)
			task_piece_next(t);
		t = n;
	}
}

/* A task a TMF waits for is done (answered, aborted, or dropped with its
 * connection): the TMF is answered once the last one is. */
static void tmf_task_done(struct task *t)
{
	struct tmf *m = t->tmf;
	if (!m)
		return;
	t->tmf = NULL;
	if (--m->pending)
		return;
	struct conn *mc = m->c;
	struct iscsi_bhs_tmf_rsp r;
	memset(&r, 0, sizeof(r));
	r.opcode = ISCSI_OP_TMF_RSP;
	r.flags = ISCSI_FLAG_FINAL;
	r.response = m->response;
	be32_put(r.itt, m->itt);
	if (mc->state != C_DEAD) {
		put_sns(mc, r.stat_sn, r.exp_cmd_sn, r.max_cmd_sn, true);
		send_pdu(mc, (uint8_t *)&r, NULL, 0, NULL, NULL);
	}
	mc->refs--;
	free(m);
	if (mc->state == C_DEAD && mc->refs == 0)
		conn_close(mc, NULL); /* finishes the free */
}

/* A task finished (or was answered locally); the conn may be dead. */
static void task_complete(struct task *t)
{
	struct conn *c = t->c;
	struct iscsi_server *srv = c->srv;
	if (c->state != C_DEAD && task_more(t)) {
		if (!lun_gone(srv, t->le)) {
			t->state = T_SENDING;
			send_data_in(t, t->cmd.data_in_len, false, false, 0, 0);
			return;
		}
		scsi_no_lun(&t->cmd); /* the LUN went away under the READ */
	}
	lun_release(srv, t->le);
	t->le = NULL;
	tmf_task_done(t);
	if (c->state == C_DEAD) {
		task_free(t);
		if (c->refs == 0)
			conn_close(c, NULL);
		return;
	}
	task_unlink(t);
	if (t->aborted) {
		task_free(t);
		return;
	}
	task_respond(t);
}

/* ---- the session registry ------------------------------------------------- */
/* Lists a session that reached full feature phase (loop thread). */
static void sess_list(struct conn *c)
{
	struct sess_ent *e = calloc(1, sizeof(*e));
	if (!e)
		return; /* it runs, it just is not listed */
	struct iscsi_session_info *i = &e->info;
	snprintf(i->initiator, sizeof(i->initiator), "%s", c->initiator);
	const uint8_t *d = c->ls.isid;
	snprintf(i->isid, sizeof(i->isid), "%02x%02x%02x%02x%02x%02x", d[0], d[1], d[2], d[3], d[4],
	         d[5]);
	snprintf(i->address, sizeof(i->address), "%s", c->peer);
	snprintf(i->portal, sizeof(i->portal), "%s", c->local);
	if (c->tgt)
		snprintf(i->target, sizeof(i->target), "%s", c->tgt->name);
	i->discovery = c->discovery;
	i->tsih = c->tsih;
	i->login_time = now_wall_s();
	pthread_mutex_lock(&c->srv->sess_lock);
	e->next = c->srv->sessions;
	if (e->next)
		e->next->prev = e;
	c->srv->sessions = e;
	pthread_mutex_unlock(&c->srv->sess_lock);
	c->sess = e;
}

static void sess_unlist(struct conn *c)
{
	struct sess_ent *e = c->sess;
	if (!e)
		return;
	pthread_mutex_lock(&c->srv->sess_lock);
	if (e->prev)
		e->prev->next = e->next;
	else
		c->srv->sessions = e->next;
	if (e->next)
		e->next->prev = e->prev;
	pthread_mutex_unlock(&c->srv->sess_lock);
	c->sess = NULL;
	free(e);
}

/* ---- connections --------------------------------------------------------- */
static void conn_free(struct conn *c)
{
	struct iscsi_server *srv = c->srv;
	if (c->prev)
		c->prev->next = c->next;
	else if (srv->conns == c)
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c->rx);
	free(c->ls.text);
	free(c->text_rsp);
	free(c->text_req);
	free(c);
}

/* Ends a connection: closes the socket now, frees what only it uses, and
 * frees the struct once no worker or TMF refers to it any more. */
static void conn_close(struct conn *c, const char *why)
{
	struct iscsi_server *srv = c->srv;
	if (c->state != C_DEAD) {
		if (why) {
			bool err = strcmp(why, "peer closed") != 0;
			if (err)
				log_info("iscsi: closing connection from %s (%s): %s", c->peer,
				         c->initiator[0] ? c->initiator : "not logged in", why);
			else
				log_debug("iscsi: %s closed its connection", c->peer);
			pthread_mutex_lock(&srv->lock);
			srv->stats.conn_errors += err;
			pthread_mutex_unlock(&srv->lock);
		}
		bool was_full = c->state == C_FULL;
		c->state = C_DEAD;
		epoll_ctl(srv->efd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
		c->fd = -1;
		while (c->tx_head) {
			struct txb *b = c->tx_head;
			c->tx_head = b->next;
			txb_free(b);
		}
		c->tx_tail = NULL;
		c->tx_bytes = 0;
		c->wq_head = c->wq_tail = NULL;
		hungry_remove(c);
		/* the tasks in workers unlink nothing from a dead conn */
		__atomic_sub_fetch(&srv->wbuf_mem, c->buffered, __ATOMIC_RELAXED);
		c->buffered = 0;
		struct task *t = c->tasks;
		while (t) {
			struct task *n = t->next;
			if (t->state != T_QUEUED) {
				/* a READ between pieces may be what a TMF waits for */
				tmf_task_done(t);
				lun_release(srv, t->le);
				task_free(t);
			} else {
				t->aborted = true;
				task_cancel(t);
			}
			t = n;
		}
		c->tasks = NULL;
		c->ntasks = 0;
		sess_unlist(c);
		if (c->tgt) {
			if (was_full) {
				/* The session's nexus is gone: let every LU drop its
				 * reservations and unit attentions for it.  The entries
				 * are pinned (inflight) while we call out unlocked. */
				struct lun_ent *ents[64];
				size_t n = 0;
				pthread_mutex_lock(&srv->lock);
				for (struct lun_ent *e = c->tgt->luns; e && n < ARRAY_SIZE(ents); e = e->next) {
					e->inflight++;
					ents[n++] = e;
				}
				pthread_mutex_unlock(&srv->lock);
				for (size_t i = 0; i < n; i++) {
					scsi_lu_nexus_gone(ents[i]->lu, c->nexus);
					lun_release(srv, ents[i]);
				}
			}
			server_target_put(srv, c->tgt);
			c->tgt = NULL;
		}
		if (was_full) {
			pthread_mutex_lock(&srv->lock);
			srv->stats.sessions--;
			pthread_mutex_unlock(&srv->lock);
		}
	}
	if (c->refs == 0 && !c->in_grave) {
		/* freed at the end of this loop pass: events of the current
		 * epoll batch may still point at it */
		c->in_grave = true;
		c->gnext = srv->grave;
		srv->grave = c;
	}
}

unsigned iscsi_target_sessions(struct iscsi_server *srv, const char *iqn)
{
	/* the session registry's lock: never taken on the I/O path */
	unsigned n = 0;
	pthread_mutex_lock(&srv->sess_lock);
	for (const struct sess_ent *e = srv->sessions; e; e = e->next)
		n += !e->info.discovery && !strcasecmp(e->info.target, iqn);
	pthread_mutex_unlock(&srv->sess_lock);
	return n;
}

static void bury(struct iscsi_server *srv)
{
	while (srv->grave) {
		struct conn *c = srv->grave;
		srv->grave = c->gnext;
		conn_free(c);
	}
}

/* Checks CmdSN of a non-immediate request and advances ExpCmdSN.  Returns
 * false when the PDU falls outside the window and must be ignored. */
static bool cmdsn_accept(struct conn *c, bool immediate, uint32_t sn)
{
	if (immediate)
		return true;
	if (sn == c->exp_cmd_sn) {
		c->exp_cmd_sn++;
		return true;
	}
	update_max_cmd_sn(c);
	if (sn_lt(c->exp_cmd_sn, sn) && sn_le(sn, c->max_cmd_sn)) {
		/* One connection per session delivers in order, so a gap means
		 * the initiator skipped numbers: follow it. */
		log_debug("iscsi: %s: CmdSN %u ahead of %u", c->peer, sn, c->exp_cmd_sn);
		c->exp_cmd_sn = sn + 1;
		return true;
	}
	log_warn("iscsi: %s: CmdSN %u outside window [%u, %u], ignored", c->peer, sn,
	         c->exp_cmd_sn, c->max_cmd_sn);
	return false;
}

static int handle_scsi_cmd(struct conn *c, const struct iscsi_pdu_view *v)
{
	struct iscsi_server *srv = c->srv;
	const struct iscsi_bhs_scsi_cmd *h = (const void *)v->bhs;
	uint32_t itt = be32_get(h->itt), edtl = be32_get(h->edtl), sn = be32_get(h->cmd_sn);
	if (c->discovery) {
		send_reject(c, v->bhs, ISCSI_REJECT_PROTOCOL);
		return 0;
	}
	if (!cmdsn_accept(c, v->immediate, sn))
		return 0;
	if (task_find(c, itt)) {
		send_reject(c, v->bhs, ISCSI_REJECT_TASK_IN_PROGRESS);
		return 0;
	}
	struct task *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->c = c;
	t->itt = itt;
	t->cmd_sn = sn;
	t->edtl = edtl;
	t->flags = h->flags;
	memcpy(t->lunraw, h->lun, 8);
	t->lun = iscsi_lun_decode(h->lun);
	int cl = iscsi_cdb_assemble(v, t->cdb, sizeof(t->cdb));
	if (cl < 0) {
		free(t);
		send_reject(c, v->bhs, ISCSI_REJECT_INVALID_FIELD);
		return 0;
	}
	t->cdb_len = (uint8_t)cl;
	t->state = T_COLLECT;
	/* link first so that every exit path below answers through the task */
	t->next = c->tasks;
	if (c->tasks)
		c->tasks->prev = t;
	c->tasks = t;
	c->ntasks++;
	if (t->flags & ISCSI_CMD_WRITE)
		wbuf_add(c, edtl);

	if (t->cdb[0] != 0xa0) { /* REPORT LUNS is the target's */
		pthread_mutex_lock(&srv->lock);
		for (struct lun_ent *e = c->tgt->luns; e; e = e->next)
			if (e->lun == t->lun && !e->removed) {
				t->le = e;
				e->inflight++;
				break;
			}
		pthread_mutex_unlock(&srv->lock);
	}
	enum scsi_dir dir = SCSI_DIR_NONE;
	uint32_t bs = t->le ? scsi_lu_block_size(t->le->lu) : 512;
	if (scsi_cdb_xfer(t->cdb, t->cdb_len, bs, &dir, &t->xfer_len) < 0)
		t->xfer_len = 0;
	if (v->dlen && (!(t->flags & ISCSI_CMD_WRITE) || v->dlen > edtl ||
	                v->dlen > c->params.first_burst || !c->params.immediate_data)) {
		log_warn("iscsi: %s: bad immediate data (%u bytes, EDTL %u)", c->peer, v->dlen, edtl);
		task_unlink(t);
		lun_release(srv, t->le);
		free(t);
		send_reject(c, v->bhs, ISCSI_REJECT_PROTOCOL);
		return 0;
	}
	/* WRITE data: the connection's own reserve, or room in the total
	 * (c->buffered and srv->wbuf_mem include this command already). */
	bool wfull = (t->flags & ISCSI_CMD_WRITE) &&
	             (c->buffered > WBUF_CONN_MAX ||
	              (c->buffered > WBUF_RESERVE && srv->wbuf_mem > WBUF_SRV_MAX));
	bool too_big = edtl > ISCSI_MAX_XFER || wfull ||
	               ((t->flags & ISCSI_CMD_READ) && (t->flags & ISCSI_CMD_WRITE));
	if (too_big || c->ntasks > MAX_TASKS_PER_CONN) {
		/* Unsolicited Data-Out that may still follow for this task is
		 * dropped as data for an unknown task. */
		if (c->ntasks > MAX_TASKS_PER_CONN || (wfull && edtl <= ISCSI_MAX_XFER)) {
			t->cmd.status = SCSI_STATUS_TASK_SET_FULL;
		} else {
			/* INVALID FIELD IN CDB: the length is beyond what we buffer */
			sense_fixed(&t->cmd, 0x05, 0x24, 0x00);
		}
		if (h->flags & ISCSI_CMD_WRITE)
			wbuf_sub(c, edtl);
		t->flags &= (uint8_t)~ISCSI_CMD_WRITE;
		t->xfer_len = 0;
		t->state = T_DONE;
		task_complete(t);
		return 0;
	}
	if (edtl && (t->flags & ISCSI_CMD_READ)) {
		/* A READ streams in pieces; other data-in is short (at most
		 * DIN_OTHER, more than any of our answers). */
		t->piece = t->le && scsi_cdb_is_read(t->cdb, t->cdb_len);
		t->din_total = t->piece ? MIN(edtl, t->xfer_len) : MIN(edtl, DIN_OTHER);
		if (t->din_total) {
			int a = c->wq_head ? 0 : din_admit(c, t);
			if (a < 0)
				return a; /* the conn closes and frees the task */
			if (a == 0) {
				din_wait(c, t); /* runs once a buffer frees up */
				return 0;
			}
		}
		task_submit(t);
		return 0;
	}
	if (edtl && (t->flags & ISCSI_CMD_WRITE)) {
		t->buf = malloc(edtl);
		if (!t->buf)
			return -ENOMEM; /* the conn closes and frees the task */
	}
	if (t->flags & ISCSI_CMD_WRITE) {
		if (v->dlen)
			memcpy(t->buf, v->data, v->dlen);
		t->received = v->dlen;
		uint32_t unsol = v->dlen;
		if (!(h->flags & ISCSI_FLAG_FINAL)) {
			if (c->params.initial_r2t) {
				/* unsolicited Data-Out is not allowed: the F bit must be set */
				return -EPROTO;
			}
			unsol = MIN(c->params.first_burst, edtl);
		}
		t->r2t_next = unsol;
	}
	if (!(t->flags & ISCSI_CMD_WRITE) || t->received == edtl) {
		task_submit(t);
		return 0;
	}
	send_r2ts(c, t);
	return 0;
}

static int handle_data_out(struct conn *c, const struct iscsi_pdu_view *v)
{
	const struct iscsi_bhs_data *h = (const void *)v->bhs;
	uint32_t itt = be32_get(h->itt), ttt = be32_get(h->ttt), off = be32_get(h->buffer_offset);
	struct task *t = task_find(c, itt);
	if (!t || t->state != T_COLLECT) {
		/* Data for a task already aborted or answered: drop it. */
		log_debug("iscsi: %s: Data-Out for unknown ITT 0x%x dropped", c->peer, itt);
		return 0;
	}
	if (!(t->flags & ISCSI_CMD_WRITE))
		return -EPROTO;
	/* DataPDUInOrder=Yes and DataSequenceInOrder=Yes: data arrives in
	 * increasing offset order with no holes. */
	if (off != t->received || v->dlen > t->edtl - t->received) {
		log_warn("iscsi: %s: Data-Out at %u+%u, expected %u (EDTL %u)", c->peer, off,
		         v->dlen, t->received, t->edtl);
		return -EPROTO;
	}
	if (ttt == ISCSI_RSVD_TAG && off + v->dlen > MIN(c->params.first_burst, t->edtl)) {
		log_warn("iscsi: %s: unsolicited data beyond FirstBurstLength", c->peer);
		return -EPROTO;
	}
	/* DataSN restarts at 0 in every sequence (each R2T, and the
	 * unsolicited burst).  ERL 0 cannot recover the data: fail just this
	 * command (later Data-Out for it is dropped as unknown). */
	if (be32_get(h->data_sn) != t->out_data_sn) {
		log_warn("iscsi: %s: Data-Out DataSN %u, expected %u", c->peer,
		         be32_get(h->data_sn), t->out_data_sn);
		sense_fixed(&t->cmd, 0x0b, 0x4b, 0x00); /* ABORTED COMMAND, DATA PHASE ERROR */
		t->state = T_DONE;
		task_complete(t);
		return 0;
	}
	t->out_data_sn++;
	if (v->dlen)
		memcpy(t->buf + off, v->data, v->dlen);
	t->received += v->dlen;
	if (h->flags & ISCSI_FLAG_FINAL)
		t->out_data_sn = 0;
	if ((h->flags & ISCSI_FLAG_FINAL) && ttt != ISCSI_RSVD_TAG && t->r2t_out)
		t->r2t_out--;
	if (t->received == t->edtl) {
		task_submit(t);
		return 0;
	}
	if (h->flags & ISCSI_FLAG_FINAL)
		send_r2ts(c, t);
	return 0;
}

static int handle_nop_out(struct conn *c, const struct iscsi_pdu_view *v)
{
	const struct iscsi_bhs_nop *h = (const void *)v->bhs;
	uint32_t itt = be32_get(h->itt);
	if (itt == ISCSI_RSVD_TAG) {
		/* the answer to our keepalive ping */
		if (be32_get(h->ttt) == c->nop_ttt)
			c->nop_ttt = ISCSI_RSVD_TAG;
		return 0;
	}
	if (!cmdsn_accept(c, v->immediate, be32_get(h->sn1)))
		return 0;
	void *echo = NULL;
	uint32_t dlen = MIN(v->dlen, c->params.max_xmit_dsl);
	if (dlen) {
		echo = malloc(dlen);
		if (!echo)
			return -ENOMEM;
		memcpy(echo, v->data, dlen);
	}
	struct iscsi_bhs_nop r;
	memset(&r, 0, sizeof(r));
	r.opcode = ISCSI_OP_NOP_IN;
	r.flags = ISCSI_FLAG_FINAL;
	memcpy(r.lun, h->lun, 8);
	be32_put(r.itt, itt);
	be32_put(r.ttt, ISCSI_RSVD_TAG);
	put_sns(c, r.sn1, r.sn2, r.max_cmd_sn, true);
	send_pdu(c, (uint8_t *)&r, echo, dlen, echo, NULL);
	return 0;
}

static void send_text_chunk(struct conn *c, uint32_t itt, const uint8_t *lun)
{
	size_t left = c->text_rsp_len - c->text_rsp_off;
	size_t len = MIN(left, c->params.max_xmit_dsl);
	bool more = len < left;
	char *chunk = NULL;
	if (len) {
		chunk = malloc(len);
		if (!chunk) {
			conn_close(c, "out of memory");
			return;
		}
		memcpy(chunk, c->text_rsp + c->text_rsp_off, len);
	}
	c->text_rsp_off += len;
	struct iscsi_bhs_text r;
	memset(&r, 0, sizeof(r));
	r.opcode = ISCSI_OP_TEXT_RSP;
	r.flags = more ? ISCSI_TEXT_CONTINUE : ISCSI_FLAG_FINAL;
	if (lun)
		memcpy(r.lun, lun, 8);
	be32_put(r.itt, itt);
	if (more) {
		c->text_ttt = c->next_ttt++;
		if (c->text_ttt == ISCSI_RSVD_TAG)
			c->text_ttt = c->next_ttt++;
	} else {
		c->text_ttt = ISCSI_RSVD_TAG;
		free(c->text_rsp);
		c->text_rsp = NULL;
		c->text_rsp_len = c->text_rsp_off = 0;
	}
	be32_put(r.ttt, more ? c->text_ttt : ISCSI_RSVD_TAG);
	put_sns(c, r.sn1, r.sn2, r.max_cmd_sn, true);
	send_pdu(c, (uint8_t *)&r, chunk, (uint32_t)len, chunk, NULL);
}

static int handle_text(struct conn *c, const struct iscsi_pdu_view *v)
{
	const struct iscsi_bhs_text *h = (const void *)v->bhs;
	uint32_t itt = be32_get(h->itt), ttt = be32_get(h->ttt);
	if (!cmdsn_accept(c, v->immediate, be32_get(h->sn1)))
		return 0;
	if (ttt != ISCSI_RSVD_TAG) {
		/* the initiator asks for the next part of our response */
		if (!c->text_rsp || ttt != c->text_ttt)
			return -EPROTO;
		send_text_chunk(c, itt, h->lun);
		return 0;
	}
	free(c->text_rsp);
	c->text_rsp = NULL;
	c->text_rsp_len = c->text_rsp_off = 0;
	if (c->text_req_len + v->dlen > ISCSI_LOGIN_TEXT_MAX)
		return -EMSGSIZE;
	if (v->dlen) {
		char *n = realloc(c->text_req, c->text_req_len + v->dlen);
		if (!n)
			return -ENOMEM;
		c->text_req = n;
		memcpy(c->text_req + c->text_req_len, v->data, v->dlen);
		c->text_req_len += v->dlen;
	}
	if (h->flags & ISCSI_TEXT_CONTINUE) {
		/* more request text follows: answer with an empty response */
		c->text_rsp = NULL;
		send_text_chunk(c, itt, h->lun);
		return 0;
	}
	struct iscsi_kv kv[64];
	int n = iscsi_text_parse(c->text_req ? c->text_req : "", c->text_req_len, kv, 64);
	char *rsp = malloc(ISCSI_TEXT_RSP_MAX);
	if (!rsp)
		return -ENOMEM;
	size_t len = 0;
	if (n < 0) {
		free(rsp);
		free(c->text_req);
		c->text_req = NULL;
		c->text_req_len = 0;
		send_reject(c, v->bhs, ISCSI_REJECT_INVALID_FIELD);
		return 0;
	}
	for (int i = 0; i < n; i++) {
		char key[ISCSI_KEY_MAX + 1], val[ISCSI_NAME_MAX + 1];
		memcpy(key, kv[i].key, kv[i].klen);
		key[kv[i].klen] = '\0';
		if (!strcmp(key, "SendTargets")) {
			if (iscsi_kv_value(&kv[i], val, sizeof(val)) < 0)
				continue;
			const char *only = NULL;
			if (!c->discovery)
				only = c->tgt->name; /* a normal session sees its own target */
			if (strcmp(val, "All") != 0 && val[0]) {
				if (only && strcmp(only, val) != 0)
					continue;
				only = val;
			} else if (!val[0] && c->discovery) {
				continue;
			}
			server_send_targets(c->srv, only, c->local, c->discovery ? &c->ls.auth : NULL,
			                    rsp, ISCSI_TEXT_RSP_MAX, &len);
		} else {
			iscsi_text_add(rsp, ISCSI_TEXT_RSP_MAX, &len, key, "NotUnderstood");
		}
	}
	free(c->text_req);
	c->text_req = NULL;
	c->text_req_len = 0;
	c->text_rsp = rsp;
	c->text_rsp_len = len;
	c->text_rsp_off = 0;
	send_text_chunk(c, itt, h->lun);
	return 0;
}

static int handle_logout(struct conn *c, const struct iscsi_pdu_view *v)
{
	const struct iscsi_bhs_logout_req *h = (const void *)v->bhs;
	if (!cmdsn_accept(c, v->immediate, be32_get(h->cmd_sn)))
		return 0;
	uint8_t reason = h->reason & 0x7f;
	struct iscsi_bhs_logout_rsp r;
	memset(&r, 0, sizeof(r));
	r.opcode = ISCSI_OP_LOGOUT_RSP;
	r.flags = ISCSI_FLAG_FINAL;
	/* ERL 0 and one connection: closing the session or the connection is
	 * the same; recovery (reason 2) is not supported. */
	r.response = reason <= 1 ? 0 : 2;
	be32_put(r.itt, be32_get(h->itt));
	put_sns(c, r.stat_sn, r.exp_cmd_sn, r.max_cmd_sn, true);
	send_pdu(c, (uint8_t *)&r, NULL, 0, NULL, NULL);
	if (c->tx_tail) /* NULL only if queuing failed and closed c */
		c->tx_tail->close_after = true;
	c->close_pending = true;
	log_debug("iscsi: %s logged out", c->initiator);
	return 0;
}

/* Marks a task aborted by a TMF; the TMF answer waits for queued ones. */
static void tmf_abort_task(struct task *t, struct tmf *m)
{
	struct conn *tc = t->c;
	if (t->state == T_COLLECT || t->state == T_WAITBUF) {
		if (t->state == T_WAITBUF)
			din_unwait(tc, t);
		task_unlink(t);
		lun_release(tc->srv, t->le);
		task_free(t);
		return;
	}
	/* Queued, or a READ whose piece is being sent: the answer waits
	 * until the worker or the socket is done with it. */
	if ((t->state == T_QUEUED || t->state == T_SENDING || t->state == T_SENT) && !t->aborted) {
		t->aborted = true;
		if (t->state == T_QUEUED)
			task_cancel(t);
		if (!t->tmf) {
			t->tmf = m;
			m->pending++;
		}
	}
}

static void tmf_abort_where(struct iscsi_server *srv, struct conn *only, struct target *tgt,
                            const struct lun_ent *le, struct tmf *m)
{
	for (struct conn *c = srv->conns; c; c = c->next) {
		if (c->state != C_FULL || (only && c != only) || c->tgt != tgt)
			continue;
		struct task *t = c->tasks;
		while (t) {
			struct task *n = t->next;
			if (!le || t->le == le)
				tmf_abort_task(t, m);
			t = n;
		}
	}
}

static int handle_tmf(struct conn *c, const struct iscsi_pdu_view *v)
{
	struct iscsi_server *srv = c->srv;
	const struct iscsi_bhs_tmf_req *h = (const void *)v->bhs;
	if (!cmdsn_accept(c, v->immediate, be32_get(h->cmd_sn)))
		return 0;
	struct tmf *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->c = c;
	m->itt = be32_get(h->itt);
	m->tgt = c->tgt;
	uint8_t fn = h->function & 0x7f;
	uint64_t lun = iscsi_lun_decode(h->lun);
	struct lun_ent *le = NULL;
	if (c->discovery) {
		m->response = ISCSI_TMF_RSP_REJECTED;
		goto answer;
	}
	pthread_mutex_lock(&srv->lock);
	for (struct lun_ent *e = c->tgt->luns; e; e = e->next)
		if (e->lun == lun && !e->removed)
			le = e;
	pthread_mutex_unlock(&srv->lock);
	m->pending = 1; /* held while we walk the tasks */
	switch (fn) {
	case ISCSI_TMF_ABORT_TASK: {
		struct task *t = task_find(c, be32_get(h->ref_itt));
		if (!t) {
			/* already answered (or never received): initiators such as
			 * libiscsi expect "does not exist" for a finished task */
			m->response = ISCSI_TMF_RSP_NO_TASK;
		} else if (t->lun != lun) {
			m->response = ISCSI_TMF_RSP_NO_TASK;
		} else {
			tmf_abort_task(t, m);
		}
		break;
	}
	case ISCSI_TMF_ABORT_TASK_SET:
	case ISCSI_TMF_CLEAR_TASK_SET:
		if (!le) {
			m->response = ISCSI_TMF_RSP_NO_LUN;
			break;
		}
		tmf_abort_where(srv, fn == ISCSI_TMF_ABORT_TASK_SET ? c : NULL, c->tgt, le, m);
		break;
	case ISCSI_TMF_CLEAR_ACA:
		if (!le)
			m->response = ISCSI_TMF_RSP_NO_LUN;
		break; /* NACA is never set: nothing to clear */
	case ISCSI_TMF_LUN_RESET:
		if (!le) {
			m->response = ISCSI_TMF_RSP_NO_LUN;
			break;
		}
		tmf_abort_where(srv, NULL, c->tgt, le, m);
		scsi_lu_reset(le->lu);
		break;
	case ISCSI_TMF_TARGET_WARM_RESET:
	case ISCSI_TMF_TARGET_COLD_RESET: {
		tmf_abort_where(srv, NULL, c->tgt, NULL, m);
		struct scsi_lu *lus[64];
		size_t n = 0;
		pthread_mutex_lock(&srv->lock);
		for (struct lun_ent *e = c->tgt->luns; e && n < ARRAY_SIZE(lus); e = e->next)
			if (!e->removed)
				lus[n++] = e->lu;
		pthread_mutex_unlock(&srv->lock);
		/* LUNs are only removed by iscsi_lun_remove, which waits for
		 * tasks, not for this loop: reset while still listed. */
		for (size_t i = 0; i < n; i++)
			scsi_lu_reset(lus[i]);
		m->cold = fn == ISCSI_TMF_TARGET_COLD_RESET;
		break;
	}
	case ISCSI_TMF_TASK_REASSIGN:
		m->response = ISCSI_TMF_RSP_NO_REASSIGN;
		break;
	default:
		m->response = ISCSI_TMF_RSP_NOT_SUPPORTED;
		break;
	}
	m->pending--;
	if (m->pending) {
		c->refs++; /* answered from task_complete() */
		return 0;
	}
answer:;
	struct iscsi_bhs_tmf_rsp r;
	memset(&r, 0, sizeof(r));
	r.opcode = ISCSI_OP_TMF_RSP;
	r.flags = ISCSI_FLAG_FINAL;
	r.response = m->response;
	be32_put(r.itt, m->itt);
	put_sns(c, r.stat_sn, r.exp_cmd_sn, r.max_cmd_sn, true);
	send_pdu(c, (uint8_t *)&r, NULL, 0, NULL, NULL);
	if (m->cold) {
		/* the reset drops every session of the target after the answer */
		for (struct conn *o = srv->conns; o; o = o->next)
			if (o != c && o->state == C_FULL && o->tgt == c->tgt)
				conn_close(o, NULL);
		if (c->tx_tail) /* NULL only if queuing failed and closed c */
			c->tx_tail->close_after = true;
		c->close_pending = true;
	}
	free(m);
	return 0;
}

/* ---- login --------------------------------------------------------------- */
/* The I_T nexus id the SCSI layer keys reservations and unit attentions
 * on.  It must be the same for every session of one initiator port to one
 * target port, so that registrations survive a new login (SPC-4: they
 * belong to the I_T nexus, not to a session): a hash of the SCSI initiator
 * port name (RFC 7143: InitiatorName ",i,0x" ISID) and the target
 * port name (TargetName ",t,0x" TPGT; we have one portal group, tag 1).
 * Names are compared case-insensitively (RFC 3722 folds them to lower
 * case), so they are hashed folded.  XXH3-64 over these short names makes
 * a collision between two real initiator ports practically impossible
 * (about n^2 / 2^65 for n ports). */
static uint64_t nexus_id(const char *initiator, const uint8_t isid[6], const char *target)
{
	char key[2 * (ISCSI_NAME_MAX + 1) + 40];
	int n = snprintf(key, sizeof(key), "%s,i,0x%02x%02x%02x%02x%02x%02x\n%s,t,0x0001",
	                 initiator, isid[0], isid[1], isid[2], isid[3], isid[4], isid[5],
	                 target ? target : "");
	size_t len = n < 0 ? 0 : MIN((size_t)n, sizeof(key) - 1);
	for (size_t i = 0; i < len; i++)
		if (key[i] >= 'A' && key[i] <= 'Z')
			key[i] = (char)(key[i] - 'A' + 'a');
	uint64_t id = XXH3_64bits(key, len);
	return id ? id : 1; /* 0 is never a real nexus */
}

static void session_reinstate(struct conn *c)
{
	/* A new session of the same initiator port (initiator name and ISID)
	 * to the same target replaces the old one (RFC 7143 6.3.5): at ERL 0
	 * the old session is closed, its tasks end without answers, and its
	 * close tells the SCSI layer of the I_T nexus loss (RFC 7143 counts
	 * a successful reinstatement as one) before the new session can send
	 * its first command on the same nexus. */
	for (struct conn *o = c->srv->conns; o; o = o->next) {
		if (o == c || o->state != C_FULL || o->discovery != c->discovery || o->tgt != c->tgt)
			continue;
		if (o->nexus == c->nexus)
			conn_close(o, "session reinstated");
	}
}

static int handle_login(struct conn *c, const struct iscsi_pdu_view *v)
{
	struct iscsi_server *srv = c->srv;
	struct login_state *ls = &c->ls;
	if (v->opcode != ISCSI_OP_LOGIN_REQ) {
		log_warn("iscsi: %s: opcode 0x%x before login", c->peer, v->opcode);
		return -EPROTO;
	}
	const struct iscsi_bhs_login_req *h = (const void *)v->bhs;
	bool first = !ls->started;
	if (first) {
		ls->started = true;
		memcpy(ls->isid, h->isid, 6);
		ls->tsih = be16_get(h->tsih);
		ls->itt = be32_get(h->itt);
		c->exp_cmd_sn = be32_get(h->cmd_sn);
		c->max_cmd_sn = c->exp_cmd_sn + ISCSI_QUEUE_DEPTH - 1;
		c->stat_sn = be32_get(h->exp_stat_sn);
	}
	if (ls->text_len + v->dlen > ISCSI_LOGIN_TEXT_MAX)
		return -EMSGSIZE;
	if (v->dlen) {
		char *n = realloc(ls->text, ls->text_len + v->dlen);
		if (!n)
			return -ENOMEM;
		ls->text = n;
		memcpy(ls->text + ls->text_len, v->data, v->dlen);
		ls->text_len += v->dlen;
	}
	struct iscsi_bhs_login_rsp r;
	memset(&r, 0, sizeof(r));
	r.opcode = ISCSI_OP_LOGIN_RSP;
	memcpy(r.isid, h->isid, 6);
	memcpy(r.tsih, h->tsih, 2);
	memcpy(r.itt, h->itt, 4);
	if (h->flags & ISCSI_TEXT_CONTINUE) {
		/* the request continues: ask for the rest with an empty answer */
		r.flags = (uint8_t)(ISCSI_LOGIN_CSG(h->flags) << 2);
		put_sns(c, r.stat_sn, r.exp_cmd_sn, r.max_cmd_sn, true);
		send_pdu(c, (uint8_t *)&r, NULL, 0, NULL, NULL);
		return 0;
	}
	char *buf = malloc(ISCSI_LOGIN_TEXT_MAX);
	if (!buf)
		return -ENOMEM;
	struct login_ctx lc = {
		.srv = srv, .ls = ls, .params = &c->params, .discovery = &c->discovery,
		/* Not `first`: a first request continued over several PDUs (C
		 * bit) is still the first request when it completes. */
		.tgt = &c->tgt, .initiator = c->initiator, .first = !ls->first_done,
	};
	struct login_result res;
	login_process(&lc, h, ls->text ? ls->text : "", ls->text_len, buf, ISCSI_LOGIN_TEXT_MAX,
	              &res);
	ls->first_done = true;
	free(ls->text);
	ls->text = NULL;
	ls->text_len = 0;
	uint16_t status = res.status;
	if (status == ISCSI_LOGIN_OK && res.transit && res.nsg == ISCSI_STAGE_FULL &&
	    ls->tsih != 0) {
		/* adding a connection to a session needs MaxConnections > 1 */
		status = ISCSI_LOGIN_NO_SESSION;
	}
	r.flags = (uint8_t)(res.csg << 2);
	if (status == ISCSI_LOGIN_OK && res.transit)
		r.flags |= (uint8_t)(ISCSI_LOGIN_TRANSIT | res.nsg);
	r.version_max = 0;
	r.version_active = 0;
	r.status_class = (uint8_t)(status >> 8);
	r.status_detail = (uint8_t)status;
	bool full = status == ISCSI_LOGIN_OK && res.transit && res.nsg == ISCSI_STAGE_FULL;
	if (full) {
		if (++srv->next_tsih == 0)
			srv->next_tsih = 1;
		c->tsih = srv->next_tsih;
		be16_put(r.tsih, c->tsih);
	}
	put_sns(c, r.stat_sn, r.exp_cmd_sn, r.max_cmd_sn, true);
	if (status != ISCSI_LOGIN_OK) {
		free(buf);
		log_info("iscsi: login of %s from %s refused (status 0x%04x)",
		         c->initiator[0] ? c->initiator : "?", c->peer, status);
		pthread_mutex_lock(&srv->lock);
		srv->stats.login_failures++;
		pthread_mutex_unlock(&srv->lock);
		send_pdu(c, (uint8_t *)&r, NULL, 0, NULL, NULL);
		if (c->tx_tail) /* NULL only if queuing failed and closed c */
			c->tx_tail->close_after = true;
		c->close_pending = true;
		return 0;
	}
	send_pdu(c, (uint8_t *)&r, buf, (uint32_t)res.text_len, buf, NULL);
	if (full) {
		/* digests apply to every PDU after the final login response */
		c->params.dg = ls->dg_next;
		c->params.first_burst = MIN(c->params.first_burst, c->params.max_burst);
		c->state = C_FULL;
		c->nexus = nexus_id(c->initiator, ls->isid, c->tgt ? c->tgt->name : NULL);
		c->nop_ttt = ISCSI_RSVD_TAG;
		const uint8_t *i = ls->isid;
		snprintf(c->port_name, sizeof(c->port_name), "%s,i,0x%02x%02x%02x%02x%02x%02x",
		         c->initiator, i[0], i[1], i[2], i[3], i[4], i[5]);
		session_reinstate(c);
		sess_list(c);
		pthread_mutex_lock(&srv->lock);
		srv->stats.sessions++;
		srv->stats.logins++;
		pthread_mutex_unlock(&srv->lock);
		log_info("iscsi: %s session of %s from %s%s%s", c->discovery ? "discovery" : "normal",
		         c->initiator, c->peer, c->tgt ? " to " : "", c->tgt ? c->tgt->name : "");
	}
	return 0;
}

/* ---- receive ------------------------------------------------------------- */
static int handle_pdu(struct conn *c, const struct iscsi_pdu_view *v)
{
	c->last_rx_ns = now_mono_ns();
	if (c->state == C_LOGIN)
		return handle_login(c, v);
	if (c->close_pending)
		return 0; /* logging out: ignore the rest */
	if (c->discovery && v->opcode != ISCSI_OP_TEXT_REQ && v->opcode != ISCSI_OP_LOGOUT_REQ &&
	    v->opcode != ISCSI_OP_NOP_OUT) {
		send_reject(c, v->bhs, ISCSI_REJECT_PROTOCOL);
		return 0;
	}
	switch (v->opcode) {
	case ISCSI_OP_SCSI_CMD:
		return handle_scsi_cmd(c, v);
	case ISCSI_OP_DATA_OUT:
		return handle_data_out(c, v);
	case ISCSI_OP_NOP_OUT:
		return handle_nop_out(c, v);
	case ISCSI_OP_TEXT_REQ:
		return handle_text(c, v);
	case ISCSI_OP_LOGOUT_REQ:
		return handle_logout(c, v);
	case ISCSI_OP_TMF_REQ:
		return handle_tmf(c, v);
	case ISCSI_OP_LOGIN_REQ:
		send_reject(c, v->bhs, ISCSI_REJECT_PROTOCOL);
		return 0;
	case ISCSI_OP_SNACK:
		/* ErrorRecoveryLevel 0 has no SNACK */
		send_reject(c, v->bhs, ISCSI_REJECT_NOT_SUPPORTED);
		return 0;
	default:
		send_reject(c, v->bhs, ISCSI_REJECT_NOT_SUPPORTED);
		return 0;
	}
}

static void conn_readable(struct conn *c)
{
	uint32_t max_dlen = c->state == C_LOGIN ? ISCSI_LOGIN_DLEN_MAX : ISCSI_OUR_MRDSL;
	if (c->rx_len >= ISCSI_BHS_LEN) {
		long need = iscsi_pdu_wire_len(c->rx, &c->params.dg, max_dlen);
		if (need < 0) {
			conn_close(c, "data segment too long");
			return;
		}
		if ((size_t)need > c->rx_cap) {
			uint8_t *n = realloc(c->rx, (size_t)need);
			if (!n) {
				conn_close(c, "out of memory");
				return;
			}
			c->rx = n;
			c->rx_cap = (size_t)need;
		}
	}
	ssize_t r = read(c->fd, c->rx + c->rx_len, c->rx_cap - c->rx_len);
	if (r == 0) {
		conn_close(c, c->state == C_FULL && !c->close_pending ? "peer closed" : NULL);
		return;
	}
	if (r < 0) {
		if (errno != EAGAIN && errno != EINTR)
			conn_close(c, strerror(errno));
		return;
	}
	c->rx_len += (size_t)r;
	size_t off = 0;
	for (;;) {
		struct iscsi_pdu_view v;
		max_dlen = c->state == C_LOGIN ? ISCSI_LOGIN_DLEN_MAX : ISCSI_OUR_MRDSL;
		long n = iscsi_pdu_parse(c->rx + off, c->rx_len - off, &c->params.dg, max_dlen, &v);
		if (n == 0)
			break;
		if (n < 0) {
			if (n == -EILSEQ) {
				send_reject(c, c->rx + off, ISCSI_REJECT_DIGEST);
				/* ERL 0: a digest error ends the connection */
				if (c->tx_tail)
					c->tx_tail->close_after = true;
				c->close_pending = true;
				mark_dirty(c);
				return;
			}
			conn_close(c, n == -EBADMSG   ? "header digest error"
			              : n == -EMSGSIZE ? "data segment too long"
			                               : "malformed PDU");
			return;
		}
		int e = handle_pdu(c, &v);
		if (c->state == C_DEAD)
			return;
		if (e < 0) {
			conn_close(c, e == -EPROTO ? "protocol error" : strerror(-e));
			return;
		}
		off += (size_t)n;
	}
	if (off) {
		memmove(c->rx, c->rx + off, c->rx_len - off);
		c->rx_len -= off;
	}
	mark_dirty(c);
}

static void accept_conns(struct iscsi_server *srv)
{
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(srv->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_warn("iscsi: accept: %s", strerror(errno));
			return;
		}
		struct conn *c = calloc(1, sizeof(*c));
		uint8_t *rx = malloc(64 * 1024);
		if (!c || !rx) {
			free(c);
			free(rx);
			close(fd);
			continue;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->srv = srv;
		c->fd = fd;
		c->rx = rx;
		c->rx_cap = 64 * 1024;
		c->state = C_LOGIN;
		fmt_addr(&ss, c->peer, sizeof(c->peer));
		sl = sizeof(ss);
		if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
			fmt_addr(&ss, c->local, sizeof(c->local));
		/* RFC 7143 defaults until negotiated otherwise */
		c->params.max_xmit_dsl = 8192;
		c->params.max_burst = 262144;
		c->params.first_burst = 65536;
		c->params.max_r2t = 1;
		c->params.initial_r2t = true;
		c->params.immediate_data = true;
		c->nop_ttt = ISCSI_RSVD_TAG;
		c->next_ttt = 1;
		c->deadline_ns = now_mono_ns() + (uint64_t)LOGIN_TIMEOUT_S * 1000000000ull;
		c->last_rx_ns = now_mono_ns();
		c->ev = EPOLLIN | EPOLLRDHUP;
		struct epoll_event e = { .events = c->ev, .data.ptr = c };
		if (epoll_ctl(srv->efd, EPOLL_CTL_ADD, fd, &e) < 0) {
			free(rx);
			free(c);
			close(fd);
			continue;
		}
		c->next = srv->conns;
		if (srv->conns)
			srv->conns->prev = c;
		srv->conns = c;
		log_debug("iscsi: connection from %s", c->peer);
	}
}

static void drain_done(struct iscsi_server *srv)
{
	uint64_t x;
	if (read(srv->done_fd, &x, sizeof(x)) < 0 && errno != EAGAIN)
		log_warn("iscsi: eventfd read: %s", strerror(errno));
	pthread_mutex_lock(&srv->lock);
	struct task *t = srv->dq_head;
	srv->dq_head = srv->dq_tail = NULL;
	pthread_mutex_unlock(&srv->lock);
	while (t) {
		struct task *n = t->qnext;
		struct conn *c = t->c;
		t->state = T_DONE;
		srv->queued--;
		c->refs--;
		task_complete(t);
		t = n;
	}
}

/* Periodic work: login timeouts and keepalive pings of idle sessions. */
static void timers(struct iscsi_server *srv)
{
	uint64_t now = now_mono_ns();
	struct conn *c = srv->conns;
	while (c) {
		struct conn *n = c->next;
		if (c->tx_head && now - c->tx_progress_ns > (uint64_t)TX_STALL_S * 1000000000ull) {
			/* what it holds is freed for the initiators that read */
			conn_close(c, "the initiator has not read its socket for 60 s");
		} else if (c->state == C_LOGIN && now > c->deadline_ns) {
			conn_close(c, "login timed out");
		} else if (c->state == C_FULL && !c->close_pending) {
			if (c->nop_ttt != ISCSI_RSVD_TAG) {
				if (now - c->nop_sent_ns > (uint64_t)NOP_TIMEOUT_S * 1000000000ull)
					conn_close(c, "no answer to NOP-In ping");
			} else if (now - c->last_rx_ns > (uint64_t)NOP_IDLE_S * 1000000000ull &&
			           !c->tx_head) {
				struct iscsi_bhs_nop r;
				memset(&r, 0, sizeof(r));
				r.opcode = ISCSI_OP_NOP_IN;
				r.flags = ISCSI_FLAG_FINAL;
				be32_put(r.itt, ISCSI_RSVD_TAG);
				c->nop_ttt = c->next_ttt++;
				if (c->nop_ttt == ISCSI_RSVD_TAG)
					c->nop_ttt = c->next_ttt++;
				be32_put(r.ttt, c->nop_ttt);
				c->nop_sent_ns = now;
				put_sns(c, r.sn1, r.sn2, r.max_cmd_sn, false);
				send_pdu(c, (uint8_t *)&r, NULL, 0, NULL, NULL);
			}
		}
		c = n;
	}
}

/* Closes sessions of removed targets and drops tasks still collecting
 * data for removed LUNs (so that iscsi_lun_remove never waits on a slow
 * initiator). */
static void apply_config(struct iscsi_server *srv)
{
	uint64_t x;
	if (read(srv->ctl_fd, &x, sizeof(x)) < 0 && errno != EAGAIN)
		log_warn("iscsi: eventfd read: %s", strerror(errno));
	struct conn *c = srv->conns;
	while (c) {
		struct conn *n = c->next;
		if (c->tgt && c->state != C_DEAD) {
			pthread_mutex_lock(&srv->lock);
			bool gone = c->tgt->removed;
			pthread_mutex_unlock(&srv->lock);
			if (gone) {
				conn_close(c, "target removed");
				c = n;
				continue;
			}
			struct task *t = c->tasks;
			while (t && c->state != C_DEAD) {
				struct task *tn = t->next;
				bool rm = false;
				if (t->le && (t->state == T_COLLECT || t->state == T_WAITBUF ||
				              t->state == T_SENDING || t->state == T_SENT)) {
					pthread_mutex_lock(&srv->lock);
					rm = t->le->removed;
					pthread_mutex_unlock(&srv->lock);
				}
				if (rm && (t->state == T_SENDING || t->state == T_SENT)) {
					/* a READ part sent: it ends once its piece is out, and
					 * iscsi_lun_remove() need not wait for the socket */
					lun_release(srv, t->le);
					t->le = NULL;
				} else if (rm) {
					if (t->state == T_WAITBUF)
						din_unwait(c, t);
					lun_release(srv, t->le);
					t->le = NULL;
					t->cmd.cdb = t->cdb;
					t->cmd.cdb_len = t->cdb_len;
					scsi_no_lun(&t->cmd);
					if (t->flags & ISCSI_CMD_WRITE)
						wbuf_sub(c, t->edtl);
					t->flags &= (uint8_t)~ISCSI_CMD_WRITE;
					t->state = T_DONE;
					task_unlink(t);
					t->c = c;
					/* answered as a LUN that no longer exists */
					task_respond(t);
				}
				t = tn;
			}
		}
		c = n;
	}
}

static void *loop_main(void *arg)
{
	struct iscsi_server *srv = arg;
	struct epoll_event evs[64];
	uint64_t next_tick = now_mono_ns() + 1000000000ull;
	while (!__atomic_load_n(&srv->stop, __ATOMIC_SEQ_CST)) {
		int n = epoll_wait(srv->efd, evs, ARRAY_SIZE(evs), 1000);
		if (n < 0 && errno != EINTR) {
			log_error("iscsi: epoll_wait: %s", strerror(errno));
			break;
		}
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;
			if (p == &srv->lfd) {
				accept_conns(srv);
			} else if (p == &srv->done_fd) {
				drain_done(srv);
			} else if (p == &srv->ctl_fd) {
				apply_config(srv);
			} else {
				struct conn *c = p;
				/* closed earlier in this batch: its events are stale,
				 * and the struct may be gone only if refs hit 0, which
				 * conn_close defers to the end of the batch */
				if (c->state == C_DEAD)
					continue;
				if (evs[i].events & EPOLLOUT)
					conn_flush(c);
				if (c->state != C_DEAD && (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP |
				                                             EPOLLERR)))
					conn_readable(c);
			}
		}
		flush_dirty(srv);
		while (srv->din_kick) {
			din_kick(srv);
			flush_dirty(srv);
		}
		bury(srv);
		uint64_t now = now_mono_ns();
		if (now >= next_tick) {
			timers(srv);
			flush_dirty(srv);
			while (srv->din_kick) {
				din_kick(srv);
				flush_dirty(srv);
			}
			bury(srv);
			next_tick = now + 1000000000ull;
		}
	}
	/* shutdown: close everything, then wait for the workers' tasks */
	for (struct conn *c = srv->conns; c; c = c->next)
		conn_close(c, NULL);
	bury(srv);
	while (srv->queued) {
		struct epoll_event e;
		if (epoll_wait(srv->efd, &e, 1, 100) > 0 && e.data.ptr == &srv->done_fd)
			drain_done(srv);
		bury(srv);
	}
	return NULL;
}

static void *worker_main(void *arg)
{
	struct iscsi_server *srv = arg;
	pthread_mutex_lock(&srv->lock);
	for (;;) {
		while (!srv->wq_head && !srv->wstop)
			pthread_cond_wait(&srv->wcond, &srv->lock);
		if (!srv->wq_head && srv->wstop)
			break;
		struct task *t = srv->wq_head;
		srv->wq_head = t->qnext;
		if (!srv->wq_head)
			srv->wq_tail = NULL;
		struct scsi_lu *lu = t->le->lu;
		bool run = !t->cancel;
		uint32_t off = t->din_off;
		pthread_mutex_unlock(&srv->lock);
		if (run && off)
			scsi_lu_read_more(lu, &t->cmd, off); /* the next piece of a READ */
		else if (run)
			scsi_lu_exec(lu, &t->cmd);
		pthread_mutex_lock(&srv->lock);
		bool wake = srv->dq_head == NULL;
		t->qnext = NULL;
		if (srv->dq_tail)
			srv->dq_tail->qnext = t;
		else
			srv->dq_head = t;
		srv->dq_tail = t;
		if (wake) {
			uint64_t one = 1;
			if (write(srv->done_fd, &one, sizeof(one)) < 0)
				log_error("iscsi: eventfd write: %s", strerror(errno));
		}
	}
	pthread_mutex_unlock(&srv->lock);
	return NULL;
}

/* ---- public API ---------------------------------------------------------- */
int iscsi_server_create(const char *listen_hostport, struct iscsi_server **out)
{
	return iscsi_server_create_workers(listen_hostport, 0, out);
}

int iscsi_server_create_workers(const char *listen_hostport, unsigned workers,
                                struct iscsi_server **out)
{
	char host[256], port[16];
	if (!listen_hostport || split_hostport(listen_hostport, host, sizeof(host), port,
	                                       sizeof(port)) < 0) {
		log_error("iscsi: bad listen address '%s' (want HOST:PORT)",
		          listen_hostport ? listen_hostport : "");
		return -EINVAL;
	}
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
		                      .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *ai = NULL;
	int gr = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
	if (gr != 0) {
		log_error("iscsi: cannot resolve '%s': %s", listen_hostport, gai_strerror(gr));
		return -EINVAL;
	}
	struct iscsi_server *srv = calloc(1, sizeof(*srv));
	if (!srv) {
		freeaddrinfo(ai);
		return -ENOMEM;
	}
	srv->lfd = srv->efd = srv->done_fd = srv->ctl_fd = -1;
	int err = 0;
	srv->lfd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (srv->lfd < 0) {
		err = -errno;
		goto fail;
	}
	int one = 1;
	setsockopt(srv->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(srv->lfd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(srv->lfd, 128) < 0) {
		err = -errno;
		log_error("iscsi: cannot listen on %s: %s", listen_hostport, strerror(errno));
		goto fail;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	getsockname(srv->lfd, (struct sockaddr *)&ss, &sl);
	srv->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
	                                     : ntohs(((struct sockaddr_in *)&ss)->sin_port);
	srv->efd = epoll_create1(EPOLL_CLOEXEC);
	srv->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	srv->ctl_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (srv->efd < 0 || srv->done_fd < 0 || srv->ctl_fd < 0) {
		err = -errno;
		goto fail;
	}
	struct epoll_event e = { .events = EPOLLIN, .data.ptr = &srv->lfd };
	epoll_ctl(srv->efd, EPOLL_CTL_ADD, srv->lfd, &e);
	e.data.ptr = &srv->done_fd;
	epoll_ctl(srv->efd, EPOLL_CTL_ADD, srv->done_fd, &e);
	e.data.ptr = &srv->ctl_fd;
	epoll_ctl(srv->efd, EPOLL_CTL_ADD, srv->ctl_fd, &e);
	pthread_mutex_init(&srv->lock, NULL);
	pthread_mutex_init(&srv->sess_lock, NULL);
	pthread_cond_init(&srv->cond, NULL);
	pthread_cond_init(&srv->wcond, NULL);
	srv->next_tsih = (uint16_t)(now_mono_ns() & 0x7fff);
	srv->n_workers = workers ? MIN(workers, MAX_WORKERS) : N_WORKERS;
	int nw = 0;
	for (; nw < (int)srv->n_workers; nw++)
		if (pthread_create(&srv->workers[nw], NULL, worker_main, srv) != 0)
			break;
	if (nw < (int)srv->n_workers || pthread_create(&srv->loop, NULL, loop_main, srv) != 0) {
		pthread_mutex_lock(&srv->lock);
		srv->wstop = true;
		pthread_cond_broadcast(&srv->wcond);
		pthread_mutex_unlock(&srv->lock);
		for (int i = 0; i < nw; i++)
			pthread_join(srv->workers[i], NULL);
		err = -EAGAIN;
		goto fail;
	}
	freeaddrinfo(ai);
	log_info("iscsi: target listening on %s (port %d)", listen_hostport, srv->port);
	*out = srv;
	return 0;
fail:
	if (err != -EAGAIN && err < 0)
		log_error("iscsi: server on %s: %s", listen_hostport, strerror(-err));
	freeaddrinfo(ai);
	if (srv->lfd >= 0)
		close(srv->lfd);
	if (srv->efd >= 0)
		close(srv->efd);
	if (srv->done_fd >= 0)
		close(srv->done_fd);
	if (srv->ctl_fd >= 0)
		close(srv->ctl_fd);
	free(srv);
	return err ? err : -EIO;
}

static void wake_loop(struct iscsi_server *srv)
{
	uint64_t one = 1;
	if (write(srv->ctl_fd, &one, sizeof(one)) < 0)
		log_error("iscsi: eventfd write: %s", strerror(errno));
}

void iscsi_server_destroy(struct iscsi_server *srv)
{
	if (!srv)
		return;
	__atomic_store_n(&srv->stop, true, __ATOMIC_SEQ_CST);
	wake_loop(srv);
	pthread_join(srv->loop, NULL);
	pthread_mutex_lock(&srv->lock);
	srv->wstop = true;
	pthread_cond_broadcast(&srv->wcond);
	pthread_mutex_unlock(&srv->lock);
	for (unsigned i = 0; i < srv->n_workers; i++)
		pthread_join(srv->workers[i], NULL);
	while (srv->targets) {
		struct target *t = srv->targets;
		srv->targets = t->next;
		while (t->luns) {
			struct lun_ent *e = t->luns;
			t->luns = e->next;
			free(e);
		}
		free(t);
	}
	close(srv->lfd);
	close(srv->efd);
	close(srv->done_fd);
	close(srv->ctl_fd);
	pthread_mutex_destroy(&srv->lock);
	pthread_mutex_destroy(&srv->sess_lock);
	pthread_cond_destroy(&srv->cond);
	pthread_cond_destroy(&srv->wcond);
	free(srv);
}

int iscsi_server_port(const struct iscsi_server *srv)
{
	return srv->port;
}

static bool is_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') ||
		      (s[i] >= 'A' && s[i] <= 'F')))
			return false;
	return s[n] == '\0';
}

bool iscsi_name_valid(const char *s)
{
	size_t l = strlen(s);
	if (l == 0 || l > ISCSI_NAME_MAX)
		return false;
	/* RFC 3722 stringprep output is lower case ASCII letters, digits, '-',
	 * '.', ':'; upper case (folded when compared) and '_' (volume names
	 * may have it, and initiators accept it) are tolerated. */
	for (size_t i = 0; i < l; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
		      c == ':' || (c >= 'A' && c <= 'Z') || c == '_'))
			return false;
	}
	if (!strncasecmp(s, "eui.", 4))
		return is_hex(s + 4, 16);
	if (!strncasecmp(s, "naa.", 4))
		return is_hex(s + 4, 16) || is_hex(s + 4, 32);
	/* iqn.YYYY-MM.reversed-domain[:...]: the date, then a naming authority */
	if (strncasecmp(s, "iqn.", 4) != 0 || l < 13)
		return false;
	for (int i = 4; i < 11; i++)
		if (i == 8 ? s[i] != '-' : !(s[i] >= '0' && s[i] <= '9'))
			return false;
	int month = (s[9] - '0') * 10 + (s[10] - '0');
	return month >= 1 && month <= 12 && s[11] == '.' && s[12] != '.' && s[12] != ':';
}

static bool user_valid(const char *u)
{
	if (!u || !u[0] || strlen(u) > ISCSI_CHAP_SECRET_MAX)
		return false;
	for (; *u; u++)
		if ((unsigned char)*u < 0x20 || *u == 0x7f)
			return false;
	return true;
}

static bool secret_valid(const char *s)
{
	size_t l = s ? strlen(s) : 0;
	return l >= ISCSI_CHAP_SECRET_MIN && l <= ISCSI_CHAP_SECRET_MAX;
}

int iscsi_chap_check(const struct iscsi_chap *chap, const struct iscsi_chap *mutual, char *err,
                     size_t errlen)
{
	const char *why = NULL;
	if (mutual && !chap)
		why = "mutual CHAP needs one-way CHAP too";
	else if ((chap && !user_valid(chap->user)) || (mutual && !user_valid(mutual->user)))
		why = "a CHAP user name is 1 to 255 characters, no control characters";
	else if ((chap && !secret_valid(chap->secret)) || (mutual && !secret_valid(mutual->secret)))
		why = "CHAP secrets must be at least 12 characters (at most 255)";
	else if (chap && mutual && strcmp(chap->secret, mutual->secret) == 0)
		why = "the mutual CHAP secret must differ from the initiator's";
	if (why && errlen)
		snprintf(err, errlen, "%s", why);
	return why ? -EINVAL : 0;
}

static void cred_set(struct chap_cred *c, const struct iscsi_chap *chap,
                     const struct iscsi_chap *mutual)
{
	memset(c, 0, sizeof(*c));
	if (chap) {
		c->set = true;
		snprintf(c->user, sizeof(c->user), "%s", chap->user);
		snprintf(c->secret, sizeof(c->secret), "%s", chap->secret);
	}
	if (mutual) {
		c->mutual = true;
		snprintf(c->mut_user, sizeof(c->mut_user), "%s", mutual->user);
		snprintf(c->mut_secret, sizeof(c->mut_secret), "%s", mutual->secret);
	}
}

int iscsi_discovery_auth(struct iscsi_server *srv, const struct iscsi_chap *chap,
                         const struct iscsi_chap *mutual)
{
	char err[128];
	if (iscsi_chap_check(chap, mutual, err, sizeof(err)) < 0) {
		log_error("iscsi: discovery authentication: %s", err);
		return -EINVAL;
	}
	pthread_mutex_lock(&srv->lock);
	cred_set(&srv->disc, chap, mutual);
	pthread_mutex_unlock(&srv->lock);
	return 0;
}

int iscsi_target_add(struct iscsi_server *srv, const char *iqn, const struct iscsi_chap *chap,
                     const struct iscsi_chap *mutual)
{
	if (!iscsi_name_valid(iqn)) {
		log_error("iscsi: bad target name '%s'", iqn);
		return -EINVAL;
	}
	char err[128];
	if (iscsi_chap_check(chap, mutual, err, sizeof(err)) < 0) {
		log_error("iscsi: target %s: %s", iqn, err);
		return -EINVAL;
	}
	struct target *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	snprintf(t->name, sizeof(t->name), "%s", iqn);
	cred_set(&t->cred, chap, mutual);
	pthread_mutex_lock(&srv->lock);
	for (struct target *o = srv->targets; o; o = o->next)
		if (strcasecmp(o->name, iqn) == 0) {
			pthread_mutex_unlock(&srv->lock);
			free(t);
			log_error("iscsi: target %s exists", iqn);
			return -EEXIST;
		}
	struct target **pp = &srv->targets; /* keep them sorted for SendTargets */
	while (*pp && strcmp((*pp)->name, iqn) < 0)
		pp = &(*pp)->next;
	t->next = *pp;
	*pp = t;
	pthread_mutex_unlock(&srv->lock);
	return 0;
}

int iscsi_target_remove(struct iscsi_server *srv, const char *iqn)
{
	pthread_mutex_lock(&srv->lock);
	struct target **pp = &srv->targets;
	while (*pp && strcasecmp((*pp)->name, iqn) != 0)
		pp = &(*pp)->next;
	struct target *t = *pp;
	if (!t) {
		pthread_mutex_unlock(&srv->lock);
		return -ENOENT;
	}
	if (t->luns) {
		pthread_mutex_unlock(&srv->lock);
		return -EBUSY;
	}
	*pp = t->next;
	t->removed = true;
	bool free_now = t->refs == 0;
	pthread_mutex_unlock(&srv->lock);
	if (free_now)
		free(t);
	else
		wake_loop(srv);
	return 0;
}

int iscsi_lun_add(struct iscsi_server *srv, const char *iqn, uint64_t lun, struct scsi_lu *lu)
{
	if (lun > ISCSI_MAX_LUN || !lu)
		return -EINVAL;
	struct lun_ent *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->lun = lun;
	e->lu = lu;
	pthread_mutex_lock(&srv->lock);
	struct target *t = srv->targets;
	while (t && strcasecmp(t->name, iqn) != 0)
		t = t->next;
	int r = 0;
	if (!t) {
		r = -ENOENT;
	} else {
		for (struct lun_ent *o = t->luns; o; o = o->next)
			if (o->lun == lun)
				r = -EEXIST;
	}
	if (r == 0) {
		e->next = t->luns;
		t->luns = e;
	}
	pthread_mutex_unlock(&srv->lock);
	if (r < 0)
		free(e);
	return r;
}

int iscsi_lun_remove(struct iscsi_server *srv, const char *iqn, uint64_t lun)
{
	pthread_mutex_lock(&srv->lock);
	struct target *t = srv->targets;
	while (t && strcasecmp(t->name, iqn) != 0)
		t = t->next;
	struct lun_ent **pp = t ? &t->luns : NULL, *e = NULL;
	while (pp && *pp && (*pp)->lun != lun)
		pp = &(*pp)->next;
	if (pp)
		e = *pp;
	if (!e) {
		pthread_mutex_unlock(&srv->lock);
		return -ENOENT;
	}
	e->removed = true;
	*pp = e->next;
	pthread_mutex_unlock(&srv->lock);
	wake_loop(srv); /* drops tasks still waiting for data */
	pthread_mutex_lock(&srv->lock);
	while (e->inflight)
		pthread_cond_wait(&srv->cond, &srv->lock);
	pthread_mutex_unlock(&srv->lock);
	free(e);
	return 0;
}

void iscsi_server_stats(struct iscsi_server *srv, struct iscsi_stats *out)
{
	pthread_mutex_lock(&srv->lock);
	*out = srv->stats;
	pthread_mutex_unlock(&srv->lock);
	out->read_buffered = __atomic_load_n(&srv->din_mem, __ATOMIC_RELAXED);
	out->write_buffered = __atomic_load_n(&srv->wbuf_mem, __ATOMIC_RELAXED);
}

static int sess_cmp(const void *a, const void *b)
{
	const struct iscsi_session_info *x = a, *y = b;
	if (x->login_time != y->login_time)
		return x->login_time < y->login_time ? -1 : 1;
	return strcmp(x->address, y->address);
}

int iscsi_sessions(struct iscsi_server *srv, const char *iqn, struct iscsi_session_info **out,
                   size_t *n)
{
	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&srv->sess_lock);
	size_t cap = 0;
	for (struct sess_ent *e = srv->sessions; e; e = e->next)
		cap++;
	struct iscsi_session_info *v = cap ? malloc(cap * sizeof(*v)) : NULL;
	if (cap && !v) {
		pthread_mutex_unlock(&srv->sess_lock);
		return -ENOMEM;
	}
	size_t k = 0;
	for (struct sess_ent *e = srv->sessions; e; e = e->next)
		if (!iqn || (!e->info.discovery && strcasecmp(e->info.target, iqn) == 0))
			v[k++] = e->info;
	pthread_mutex_unlock(&srv->sess_lock);
	/* oldest first, so that the listing reads like a log */
	if (k > 1)
		qsort(v, k, sizeof(*v), sess_cmp);
	if (!k) {
		free(v);
		v = NULL;
	}
	*out = v;
	*n = k;
	return 0;
}
