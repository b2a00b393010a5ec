/* Reservations (SPC-2 RESERVE/RELEASE and SPC-4 persistent reservations)
 * and unit attentions, per I_T nexus.  Everything here runs under lu->mu.
 *
 * Persistent reservations are kept in memory only: REPORT CAPABILITIES
 * says PTPL_C=0, so an initiator never asks for them to survive a power
 * loss (APTPL=1 is refused).  PREEMPT AND ABORT preempts like PREEMPT; the
 * aborting of the preempted nexuses' tasks belongs to the transport, which
 * owns the task sets. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "scsi/scsi_int.h"

/* Persistent reservation types. */
#define PR_WE 1
#define PR_EA 3
#define PR_WE_RO 5
#define PR_EA_RO 6
#define PR_WE_AR 7
#define PR_EA_AR 8

static bool type_valid(uint8_t t)
{
	return t == PR_WE || t == PR_EA || t == PR_WE_RO || t == PR_EA_RO || t == PR_WE_AR || t == PR_EA_AR;
}

static bool type_all_reg(uint8_t t)
{
	return t == PR_WE_AR || t == PR_EA_AR;
}

/* ---- unit attentions ---------------------------------------------------- */

static struct nexus_state *nx_find(struct scsi_lu *lu, uint64_t nexus)
{
	for (size_t i = 0; i < lu->n_nx; i++)
		if (lu->nx[i].nexus == nexus)
			return &lu->nx[i];
	return NULL;
}

static void ua_push(struct nexus_state *n, uint16_t asc)
{
	for (uint8_t i = 0; i < n->n_ua; i++)
		if (n->ua[i] == asc)
			return;
	if (n->n_ua < ARRAY_SIZE(n->ua))
		n->ua[n->n_ua++] = asc;
	else
		n->ua[ARRAY_SIZE(n->ua) - 1] = asc;   /* keep the newest */
}

static uint16_t ua_pop(struct nexus_state *n)
{
	uint16_t asc = n->ua[0];
	memmove(n->ua, n->ua + 1, (size_t)(n->n_ua - 1) * sizeof(n->ua[0]));
	n->n_ua--;
	return asc;
}

/* First sight of a nexus: it starts with a power-on / reset attention,
 * as a freshly attached initiator sees on real hardware. */
static struct nexus_state *nx_get(struct scsi_lu *lu, uint64_t nexus)
{
	struct nexus_state *n = nx_find(lu, nexus);
	if (n)
		return n;
	if (lu->n_nx == UA_MAX_NEXUS)
		return NULL;       /* too many initiators to track: no attentions */
	n = &lu->nx[lu->n_nx++];
	memset(n, 0, sizeof(*n));
	n->nexus = nexus;
	ua_push(n, ASC_POWER_ON_RESET);
	return n;
}

void scsi_ua_all(struct scsi_lu *lu, uint16_t asc, uint64_t skip, bool use_skip)
{
	for (size_t i = 0; i < lu->n_nx; i++)
		if (!use_skip || lu->nx[i].nexus != skip)
			ua_push(&lu->nx[i], asc);
}

static void ua_to(struct scsi_lu *lu, uint64_t nexus, uint16_t asc)
{
	struct nexus_state *n = nx_find(lu, nexus);
	if (n)
		ua_push(n, asc);
}

/* ---- access checks ------------------------------------------------------ */

static struct pr_reg *reg_find(struct scsi_lu *lu, uint64_t nexus)
{
	for (size_t i = 0; i < lu->n_regs; i++)
		if (lu->regs[i].nexus == nexus)
			return &lu->regs[i];
	return NULL;
}

static bool pr_is_holder(struct scsi_lu *lu, uint64_t nexus)
{
	if (!lu->pr_held)
		return false;
	if (type_all_reg(lu->pr_type))
		return reg_find(lu, nexus) != NULL;
	return lu->pr_holder == nexus;
}

/* SPC-4 table 63 (commands in the presence of a persistent reservation),
 * reduced to the three classes our commands fall into. */
static bool pr_conflict(struct scsi_lu *lu, uint64_t nexus, enum scsi_access acc)
{
	if (!lu->pr_held || acc == ACC_ALWAYS || pr_is_holder(lu, nexus))
		return false;
	bool registered = reg_find(lu, nexus) != NULL;
	switch (lu->pr_type) {
	case PR_WE:
		return acc == ACC_WRITE;
	case PR_EA:
		return true;
	case PR_WE_RO:
	case PR_WE_AR:
		return acc == ACC_WRITE && !registered;
	case PR_EA_RO:
	case PR_EA_AR:
		return !registered;
	default:
		return false;
	}
}

/* SPC-2 reservations: everything conflicts for other nexuses except the
 * commands that only describe the device or the reservation itself. */
static bool res2_conflict(struct scsi_lu *lu, uint64_t nexus, const uint8_t *cdb)
{
	if (!lu->res2_held || lu->res2_nexus == nexus)
		return false;
	switch (cdb[0]) {
	case 0x12: /* INQUIRY */
	case 0xa0: /* REPORT LUNS */
	case 0x03: /* REQUEST SENSE */
	case 0x17: case 0x57: /* RELEASE: a no-op from another nexus */
	case 0xa3: /* REPORT SUPPORTED OPERATION CODES / TMFs */
		return false;
	case 0x1e: /* PREVENT ALLOW: ALLOW only */
		return (cdb[4] & 0x03) != 0;
	default:
		return true;
	}
}

bool scsi_admit(struct scsi_lu *lu, struct scsi_cmd *c, enum scsi_access acc, bool report_ua)
{
	struct nexus_state *n = nx_get(lu, c->nexus);
	if (report_ua && n && n->n_ua) {
		scsi_sense(c, SK_UNIT_ATTENTION, ua_pop(n));
		return false;
	}
	if (res2_conflict(lu, c->nexus, c->cdb) || pr_conflict(lu, c->nexus, acc)) {
		c->status = SCSI_STATUS_RESERVATION_CONFLICT;
		return false;
	}
	return true;
}

void scsi_request_sense(struct scsi_lu *lu, struct scsi_cmd *c)
{
	bool desc = c->cdb[1] & 0x01;
	uint8_t alloc = c->cdb[4];
	uint8_t key = SK_NO_SENSE;
	uint16_t asc = ASC_NONE;
	pthread_mutex_lock(&lu->mu);
	struct nexus_state *n = nx_find(lu, c->nexus);
	if (n && n->n_ua) {
		key = SK_UNIT_ATTENTION;
		asc = ua_pop(n);
	}
	pthread_mutex_unlock(&lu->mu);
	uint8_t s[18] = { 0 };
	size_t len;
	if (desc) {
		s[0] = 0x72;
		s[1] = key;
		s[2] = (uint8_t)(asc >> 8);
		s[3] = (uint8_t)asc;
		len = 8;
	} else {
		s[0] = 0x70;
		s[2] = key;
		s[7] = 10;
		s[12] = (uint8_t)(asc >> 8);
		s[13] = (uint8_t)asc;
		len = 18;
	}
	scsi_put_data(c, s, MIN(len, (size_t)alloc));
}

/* ---- SPC-2 RESERVE / RELEASE -------------------------------------------- */

void scsi_reserve(struct scsi_lu *lu, struct scsi_cmd *c)
{
	if (c->cdb[0] == 0x56 && (c->cdb[1] & 0x12)) {   /* 3RDPTY, LONGID */
		scsi_sense_field(c, ASC_INVALID_FIELD_CDB, true, 1, (c->cdb[1] & 0x10) ? 4 : 1);
		return;
	}
	pthread_mutex_lock(&lu->mu);
	/* With CRH=1 a persistent reservation (or any registration) makes
	 * RESERVE a conflict (SPC-4 5.13.3). */
	if (lu->pr_held || lu->n_regs || (lu->res2_held && lu->res2_nexus != c->nexus)) {
		c->status = SCSI_STATUS_RESERVATION_CONFLICT;
	} else {
		lu->res2_held = true;
		lu->res2_nexus = c->nexus;
	}
	pthread_mutex_unlock(&lu->mu);
}

void scsi_release(struct scsi_lu *lu, struct scsi_cmd *c)
{
	if (c->cdb[0] == 0x57 && (c->cdb[1] & 0x12)) {
		scsi_sense_field(c, ASC_INVALID_FIELD_CDB, true, 1, (c->cdb[1] & 0x10) ? 4 : 1);
		return;
	}
	pthread_mutex_lock(&lu->mu);
	if (lu->res2_held && lu->res2_nexus == c->nexus)
		lu->res2_held = false;
	pthread_mutex_unlock(&lu->mu);
}

/* ---- PERSISTENT RESERVE IN ---------------------------------------------- */

/* An iSCSI TransportID (SPC-4 7.6.4.6) for a registrant: format 01b
 * (name plus ISID) when the transport told us the port name, format 00b
 * otherwise.  With no name at all the registrant is described as
 * "unknown-nexus-<id>" so that the descriptor stays well formed. */
static size_t transport_id(const struct pr_reg *r, uint8_t *p)
{
	char tmp[64];
	const char *name = r->name;
	if (!name[0]) {
		snprintf(tmp, sizeof(tmp), "unknown-nexus-%llx", (unsigned long long)r->nexus);
		name = tmp;
	}
	size_t n = strlen(name) + 1;           /* NUL terminated */
	size_t add = (n + 3) & ~(size_t)3;
	if (add < 20)
		add = 20;
	memset(p, 0, 4 + add);
	p[0] = (uint8_t)((strstr(name, ",i,0x") ? 0x40 : 0x00) | 0x05);
	put_be16(p + 2, (uint16_t)add);
	memcpy(p + 4, name, n);
	return 4 + add;
}

static size_t read_full_status(struct scsi_lu *lu, uint8_t *d)
{
	size_t o = 8;
	for (size_t i = 0; i < lu->n_regs; i++) {
		const struct pr_reg *r = &lu->regs[i];
		uint8_t *e = d + o;
		memset(e, 0, 24);
		put_be64(e, r->key);
		if (pr_is_holder(lu, r->nexus)) {
			e[12] = 0x01;                      /* R_HOLDER */
			e[13] = lu->pr_type & 0x0f;
		}
		put_be16(e + 18, 1);                   /* relative target port 1 */
		size_t tl = transport_id(r, e + 24);
		put_be32(e + 20, (uint32_t)tl);
		o += 24 + tl;
	}
	put_be32(d + 4, (uint32_t)(o - 8));
	return o;
}

void scsi_pr_in(struct scsi_lu *lu, struct scsi_cmd *c)
{
	uint8_t sa = c->cdb[1] & 0x1f;
	uint16_t alloc = get_be16(c->cdb + 7);
	/* Big enough for READ FULL STATUS of every registrant. */
	size_t cap = 8 + PR_MAX_REGS * (24 + 4 + PR_NAME_MAX + 4);
	uint8_t *d = calloc(1, cap);
	size_t len;
	if (!d) {
		scsi_sense(c, SK_HARDWARE_ERROR, ASC_INTERNAL_FAILURE);
		return;
	}
	pthread_mutex_lock(&lu->mu);
	put_be32(d, lu->pr_generation);
	switch (sa) {
	case 0x00: /* READ KEYS */
		for (size_t i = 0; i < lu->n_regs; i++)
			put_be64(d + 8 + 8 * i, lu->regs[i].key);
		put_be32(d + 4, (uint32_t)(8 * lu->n_regs));
		len = 8 + 8 * lu->n_regs;
		break;
	case 0x01: /* READ RESERVATION */
		len = 8;
		if (lu->pr_held) {
			struct pr_reg *h = type_all_reg(lu->pr_type) ? NULL : reg_find(lu, lu->pr_holder);
			put_be32(d + 4, 16);
			put_be64(d + 8, h ? h->key : 0);
			d[21] = lu->pr_type & 0x0f;   /* scope: LU */
			len = 24;
		}
		break;
	case 0x02: /* REPORT CAPABILITIES */
		put_be16(d, 8);
		d[2] = 0x10;                      /* CRH */
		d[3] = 0x80;                      /* TMV, no PTPL */
		d[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02;
		d[5] = 0x01;
		d[6] = d[7] = 0;
		len = 8;
		break;
	case 0x03: /* READ FULL STATUS */
		len = read_full_status(lu, d);
		break;
	default:
		pthread_mutex_unlock(&lu->mu);
		free(d);
		scsi_sense_field(c, ASC_INVALID_FIELD_CDB, true, 1, 4);
		return;
	}
	pthread_mutex_unlock(&lu->mu);
	scsi_put_data(c, d, MIN(len, (size_t)alloc));
	free(d);
}

/* ---- PERSISTENT RESERVE OUT --------------------------------------------- */

static void reg_remove_at(struct scsi_lu *lu, size_t i)
{
	uint64_t nexus = lu->regs[i].nexus;
	lu->regs[i] = lu->regs[--lu->n_regs];
	/* The holder losing its registration loses the reservation; for the
	 * all-registrants types only the last one leaving ends it. */
	if (lu->pr_held) {
		if (type_all_reg(lu->pr_type) ? lu->n_regs == 0 : lu->pr_holder == nexus)
			lu->pr_held = false;
	}
}

/* Removes the registrations whose key is key, except the one of nexus
 * `keep`; each removed nexus gets REGISTRATIONS PREEMPTED.  Returns how
 * many went. */
static size_t reg_preempt(struct scsi_lu *lu, uint64_t key, bool all, uint64_t keep)
{
	size_t removed = 0;
	for (size_t i = 0; i < lu->n_regs;) {
		if (lu->regs[i].nexus != keep && (all || lu->regs[i].key == key)) {
			uint64_t nexus = lu->regs[i].nexus;
			lu->regs[i] = lu->regs[--lu->n_regs];
			ua_to(lu, nexus, ASC_REGISTRATIONS_PREEMPTED);
			removed++;
		} else {
			i++;
		}
	}
	return removed;
}

static void conflict(struct scsi_cmd *c)
{
	c->status = SCSI_STATUS_RESERVATION_CONFLICT;
}

static void pr_register(struct scsi_lu *lu, struct scsi_cmd *c, struct pr_reg *r,
                        uint64_t key, uint64_t sakey, bool ignore)
{
	if (!r) {
		if (!ignore && key != 0) {
			conflict(c);
			return;
		}
		if (sakey == 0)
			return;
		if (lu->n_regs == PR_MAX_REGS) {
			scsi_sense(c, SK_ILLEGAL_REQUEST, ASC_INSUFFICIENT_REG_RES);
			return;
		}
		struct pr_reg *n = &lu->regs[lu->n_regs++];
		n->nexus = c->nexus;
		n->key = sakey;
		snprintf(n->name, sizeof(n->name), "%s", c->initiator ? c->initiator : "");
		lu->pr_generation++;
		return;
	}
	if (!ignore && key != r->key) {
		conflict(c);
		return;
	}
	if (sakey == 0) {
		uint8_t type = lu->pr_type;
		bool was_held = lu->pr_held;
		reg_remove_at(lu, (size_t)(r - lu->regs));
		/* The holder unregistering releases an RO / AR reservation: the
		 * other registrants are told (SPC-4 5.12.11.2). */
		if (was_held && !lu->pr_held && (type == PR_WE_RO || type == PR_EA_RO))
			for (size_t i = 0; i < lu->n_regs; i++)
				ua_to(lu, lu->regs[i].nexus, ASC_RESERVATIONS_RELEASED);
	} else {
		r->key = sakey;
	}
	lu->pr_generation++;
}

static void pr_preempt(struct scsi_lu *lu, struct scsi_cmd *c, uint64_t sakey, uint8_t type)
{
	if (!lu->pr_held || (type_all_reg(lu->pr_type) && sakey != 0)) {
		/* No reservation (or an all-registrants one and a key named):
		 * only registrations go. */
		if (sakey == 0) {
			scsi_sense_field(c, ASC_INVALID_FIELD_PARAM, false, 8, -1);
			return;
		}
		if (!reg_preempt(lu, sakey, false, c->nexus)) {
			conflict(c);
			return;
		}
		lu->pr_generation++;
		return;
	}
	if (type_all_reg(lu->pr_type)) {
		/* sakey == 0: every other registrant goes, we hold it alone. */
		reg_preempt(lu, 0, true, c->nexus);
		lu->pr_held = true;
		lu->pr_holder = c->nexus;
		lu->pr_type = type;
		lu->pr_generation++;
		return;
	}
	struct pr_reg *holder = reg_find(lu, lu->pr_holder);
	uint64_t hkey = holder ? holder->key : 0;
	if (sakey != hkey) {
		if (sakey == 0) {
			scsi_sense_field(c, ASC_INVALID_FIELD_PARAM, false, 8, -1);
			return;
		}
		if (!reg_preempt(lu, sakey, false, c->nexus)) {
			conflict(c);
			return;
		}
		lu->pr_generation++;
		return;
	}
	uint8_t old_type = lu->pr_type;
	reg_preempt(lu, sakey, false, c->nexus);
	lu->pr_held = true;
	lu->pr_holder = c->nexus;
	lu->pr_type = type;
	if (old_type != type)
		for (size_t i = 0; i < lu->n_regs; i++)
			if (lu->regs[i].nexus != c->nexus)
				ua_to(lu, lu->regs[i].nexus, ASC_RESERVATIONS_RELEASED);
	lu->pr_generation++;
}

void scsi_pr_out(struct scsi_lu *lu, struct scsi_cmd *c)
{
	const uint8_t *cdb = c->cdb;
	uint8_t sa = cdb[1] & 0x1f;
	uint8_t scope = cdb[2] >> 4, type = cdb[2] & 0x0f;
	uint32_t plen = get_be32(cdb + 5);
	if (plen != 24) {
		scsi_sense(c, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH);
		return;
	}
	if (c->data_out_len < 24 || !c->data_out) {
		scsi_sense(c, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH);
		return;
	}
	const uint8_t *p = c->data_out;
	uint64_t key = get_be64(p), sakey = get_be64(p + 8);
	uint8_t flags = p[20];
	if (flags & 0x0d) {            /* SPEC_I_PT, APTPL: not supported */
		scsi_sense_field(c, ASC_INVALID_FIELD_PARAM, false, 20, (flags & 0x08) ? 3 : 0);
		return;
	}
	bool needs_type = sa == 0x01 || sa == 0x02 || sa == 0x04 || sa == 0x05;
	if (needs_type && scope != 0) {
		scsi_sense_field(c, ASC_INVALID_FIELD_CDB, true, 2, 7);
		return;
	}
	if (needs_type && !type_valid(type)) {
		scsi_sense_field(c, ASC_INVALID_FIELD_CDB, true, 2, 3);
		return;
	}

	pthread_mutex_lock(&lu->mu);
	struct pr_reg *r = reg_find(lu, c->nexus);
	if (sa == 0x00 || sa == 0x06) {
		pr_register(lu, c, r, key, sakey, sa == 0x06);
		pthread_mutex_unlock(&lu->mu);
		return;
	}
	/* Every other action needs this nexus registered with that key. */
	if (!r || r->key != key) {
		pthread_mutex_unlock(&lu->mu);
		conflict(c);
		return;
	}
	switch (sa) {
	case 0x01: /* RESERVE */
		if (!lu->pr_held) {
			lu->pr_held = true;
			lu->pr_holder = c->nexus;
			lu->pr_type = type;
		} else if (!pr_is_holder(lu, c->nexus) || lu->pr_type != type) {
			conflict(c);
		}
		break;
	case 0x02: /* RELEASE */
		if (!lu->pr_held || !pr_is_holder(lu, c->nexus))
			break;
		if (lu->pr_type != type) {
			scsi_sense(c, SK_ILLEGAL_REQUEST, 0x2604);  /* invalid release of PR */
			break;
		}
		lu->pr_held = false;
		if (type != PR_WE && type != PR_EA)
			for (size_t i = 0; i < lu->n_regs; i++)
				if (lu->regs[i].nexus != c->nexus)
					ua_to(lu, lu->regs[i].nexus, ASC_RESERVATIONS_RELEASED);
		break;
	case 0x03: /* CLEAR */
		for (size_t i = 0; i < lu->n_regs; i++)
			if (lu->regs[i].nexus != c->nexus)
				ua_to(lu, lu->regs[i].nexus, ASC_RESERVATIONS_PREEMPTED);
		lu->n_regs = 0;
		lu->pr_held = false;
		lu->pr_generation++;
		break;
	case 0x04: /* PREEMPT */
	case 0x05: /* PREEMPT AND ABORT */
		pr_preempt(lu, c, sakey, type);
		break;
	default:
		scsi_sense_field(c, ASC_INVALID_FIELD_CDB, true, 1, 4);
		break;
	}
	pthread_mutex_unlock(&lu->mu);
}
