// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * AgentPolicy / ClusterAgentPolicy files -> checked model.
 *
 * Both YAML (libyaml events) and JSON (cJSON) are first turned into one
 * small positioned tree, so that a single validator gives the same
 * messages, at the same kind of position, whatever the input format. The
 * validator never stops at the first problem: people fix policy files in
 * batches, and a round trip per error is what makes them give up on a
 * tool.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/types.h>

#include <cJSON.h>
#include <yaml.h>

#include "sluice/sluice.h"
#include "policy.h"

#define API_VERSION	"sluice.dev/v1alpha1"
#define PATHLEN		192
#define QLEN		96
/* Larger files are refused rather than read: 100k rules take ~10 MiB. */
#define MAX_FILE_SIZE	(256UL << 20)
/* Nodes that alias expansion may create per file: enough for any real
 * policy, small enough that a "billion laughs" file costs nothing. */
#define ALIAS_BUDGET	(1UL << 20)

/* ------------------------------------------------------------------ */
/* Positioned tree                                                      */

enum nkind { NK_SCALAR, NK_MAP, NK_SEQ };
enum stype { ST_STR, ST_INT, ST_FLOAT, ST_BOOL, ST_NULL };

struct node {
	enum nkind kind;
	enum stype st;		/* NK_SCALAR only */
	int line, col;		/* 1-based */
	char *s;		/* NK_SCALAR: text */
	struct node **v;	/* NK_SEQ: items; NK_MAP: key, value, key, ... */
	size_t n, cap;
};

struct filedoc {
	struct pol_doc d;
	int name_line, name_col;	/* metadata.name, for duplicate reports */
};

/* The tree of a document lives in an arena, freed whole once the document
 * is checked: a 10k-rule file is 60k nodes, and allocating and freeing
 * each node, its text and its children's array was a third of its parse. */
#define ARENA_CHUNK (64 * 1024)

struct arena_chunk {
	struct arena_chunk *next;
	size_t used, cap;
	max_align_t data[];
};

struct pctx {
	const char *file;
	const char *buf;	/* for offset -> line:col */
	size_t len;
	struct pol_diags *diags;
	const struct pol_set *set;	/* docs of earlier files */
	size_t nerr;
	bool oom;
	size_t alias_budget;
	struct filedoc *docs;	/* this file's; moved into the set if nerr == 0 */
	size_t ndocs, cap;
	struct arena_chunk *arena;	/* the tree being read */
};

static void *arena__alloc(struct pctx *p, size_t size)
{
	struct arena_chunk *c = p->arena;
	void *r;

	size = (size + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
	if (!c || c->cap - c->used < size) {
		size_t cap = size > ARENA_CHUNK ? size : ARENA_CHUNK;

		c = malloc(sizeof(*c) + cap);
		if (!c) {
			p->oom = true;
			return NULL;
		}
		c->next = p->arena;
		c->used = 0;
		c->cap = cap;
		p->arena = c;
	}
	r = (char *)c->data + c->used;
	c->used += size;
	return r;
}

/* Every node and text of the tree; one chunk is kept for the next. */
static void arena__reset(struct pctx *p, bool all)
{
	while (p->arena && (all || p->arena->next)) {
		struct arena_chunk *c = p->arena;

		p->arena = c->next;
		if (!all && !p->arena) {
			p->arena = c;
			break;
		}
		free(c);
	}
	if (p->arena)
		p->arena->used = 0;
}

static char *node__strndup(struct pctx *p, const char *s, size_t len)
{
	char *r = arena__alloc(p, len + 1);

	if (r) {
		memcpy(r, s, len);
		r[len] = '\0';
	}
	return r;
}

static struct node *node__new(struct pctx *p, enum nkind kind, int line, int col)
{
	struct node *n = arena__alloc(p, sizeof(*n));

	if (!n)
		return NULL;
	memset(n, 0, sizeof(*n));
	n->kind = kind;
	n->line = line;
	n->col = col;
	return n;
}

static int node__push(struct pctx *p, struct node *parent, struct node *child)
{
	if (parent->n == parent->cap) {
		size_t cap = parent->cap ? parent->cap * 2 : 4;
		struct node **v = arena__alloc(p, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		if (parent->n)
			memcpy(v, parent->v, parent->n * sizeof(*v));
		parent->v = v;
		parent->cap = cap;
	}
	parent->v[parent->n++] = child;
	return 0;
}

static struct node *node__copy(struct pctx *p, const struct node *src)
{
	struct node *n;

	if (!p->alias_budget)
		return NULL;
	p->alias_budget--;
	n = node__new(p, src->kind, src->line, src->col);
	if (!n)
		return NULL;
	n->st = src->st;
	if (src->s && !(n->s = node__strndup(p, src->s, strlen(src->s))))
		return NULL;
	for (size_t i = 0; i < src->n; i++) {
		struct node *c = node__copy(p, src->v[i]);

		if (!c || node__push(p, n, c))
			return NULL;
	}
	return n;
}

/* ------------------------------------------------------------------ */
/* Diagnostics                                                          */

/* struct pol_diags has no capacity field: it is implied, the next power
 * of two, so a file with 100k errors does not cost 100k reallocs. */
static int diags__add(struct pol_diags *d, const char *file, int line, int col, char *msg)
{
	char *f = strdup(file);

	if (f && !(d->n & (d->n - 1))) {
		struct pol_diag *v = realloc(d->v, (d->n ? d->n * 2 : 1) * sizeof(*v));

		if (v)
			d->v = v;
		else {
			free(f);
			f = NULL;
		}
	}
	if (!f) {
		free(msg);
		return -ENOMEM;
	}
	d->v[d->n++] = (struct pol_diag){ .file = f, .line = line, .col = col, .msg = msg };
	return 0;
}

static void __attribute__((format(printf, 4, 5)))
pdiag_at(struct pctx *p, int line, int col, const char *fmt, ...)
{
	char *msg = NULL;
	va_list ap;

	/* Counted before formatting: an allocation failure must not turn a
	 * bad file into an accepted one. */
	p->nerr++;
	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	if (!msg || diags__add(p->diags, p->file, line, col, msg))
		p->oom = true;
}

#define pdiag(p, n, ...) pdiag_at((p), (n)->line, (n)->col, __VA_ARGS__)

/* Offsets into the input -> 1-based line and column (in characters, as
 * libyaml counts them). */
static void pos_of(const char *buf, size_t len, size_t off, int *line, int *col)
{
	int l = 1, c = 1;

	if (off > len)
		off = len;
	for (size_t i = 0; i < off; i++) {
		unsigned char ch = (unsigned char)buf[i];

		if (ch == '\n') {
			l++;
			c = 1;
		} else if ((ch & 0xc0) != 0x80) {
			c++;
		}
	}
	*line = l;
	*col = c;
}

/* S as a quoted, escaped, bounded string for messages. */
static const char *q(char out[QLEN], const char *s)
{
	size_t o = 0;

	out[o++] = '"';
	for (; s && *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (o + 8 >= QLEN) {
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		if (ch == '"' || ch == '\\') {
			out[o++] = '\\';
			out[o++] = (char)ch;
		} else if (ch < 0x20 || ch == 0x7f) {
			o += (size_t)snprintf(out + o, QLEN - o, "\\x%02x", ch);
		} else {
			out[o++] = (char)ch;
		}
	}
	out[o++] = '"';
	out[o] = '\0';
	return out;
}

/* Paths are bounded by the schema's depth; marked if ever cut short. */
static void path_done(char out[PATHLEN], int n)
{
	if (n < 0 || n >= PATHLEN)
		memcpy(out + PATHLEN - 4, "...", 4);
}

static void path_field(char out[PATHLEN], const char *path, const char *key)
{
	size_t pl = strlen(path), kl = strlen(key);

	/* Every field of every rule gets its path, used only for messages:
	 * without printf, which was a fifth of a large file's parse. */
	if (pl + 1 + kl < PATHLEN) {
		memmove(out, path, pl);
		if (pl)
			out[pl++] = '.';
		memcpy(out + pl, key, kl + 1);
		return;
	}
	path_done(out, snprintf(out, PATHLEN, "%s%s%s", path, *path ? "." : "", key));
}

static void path_index(char out[PATHLEN], const char *path, size_t i)
{
	size_t pl = strlen(path), n = 0;
	char d[24];

	do
		d[n++] = (char)('0' + i % 10);
	while ((i /= 10));
	if (pl + n + 2 < PATHLEN) {
		memmove(out, path, pl);
		out[pl++] = '[';
		while (n)
			out[pl++] = d[--n];
		out[pl++] = ']';
		out[pl] = '\0';
		return;
	}
	path_done(out, snprintf(out, PATHLEN, "%s[...]", path));
}

/* Map keys that are data, not schema (labels), may hold dots. */
static void path_key(char out[PATHLEN], const char *path, const char *key)
{
	char qb[QLEN];

	path_done(out, snprintf(out, PATHLEN, "%s[%s]", path, q(qb, key)));
}

/* ------------------------------------------------------------------ */
/* Typed access                                                         */

static const char *type_name(const struct node *n)
{
	if (n->kind == NK_MAP)
		return "mapping";
	if (n->kind == NK_SEQ)
		return "list";
	switch (n->st) {
	case ST_STR:	return "string";
	case ST_INT:	return "integer";
	case ST_FLOAT:	return "number";
	case ST_BOOL:	return "boolean";
	case ST_NULL:	return "null";
	}
	return "value";
}

static void bad_type(struct pctx *p, const struct node *n, const char *path, const char *want)
{
	char qb[QLEN];

	if (n->kind == NK_SCALAR && n->st != ST_NULL)
		pdiag(p, n, "%s: expected %s, got %s %s", path, want, type_name(n), q(qb, n->s));
	else
		pdiag(p, n, "%s: expected %s, got %s", path, want, type_name(n));
}

static bool is_null(const struct node *n)
{
	return n->kind == NK_SCALAR && n->st == ST_NULL;
}

static const struct node *map_get(const struct node *m, const char *key, const struct node **keyp)
{
	for (size_t i = 0; i + 1 < m->n; i += 2) {
		const struct node *k = m->v[i];

		if (k->kind == NK_SCALAR && k->s && !strcmp(k->s, key)) {
			if (keyp)
				*keyp = k;
			return m->v[i + 1];
		}
	}
	return NULL;
}

/*
 * M[KEY] with its path in SUB. A null value counts as absent, as it does
 * for the Kubernetes API server. A missing required field is reported at
 * the mapping that lacks it.
 */
static const struct node *field(struct pctx *p, const struct node *m, const char *path,
				const char *key, bool required, char sub[PATHLEN])
{
	const struct node *k = NULL, *v = map_get(m, key, &k);

	path_field(sub, path, key);
	if (v && is_null(v)) {
		if (required)
			pdiag(p, k, "%s: needs a value", sub);
		return NULL;
	}
	if (!v && required) {
		if (*path)
			pdiag(p, m, "%s: missing required field \"%s\"", path, key);
		else
			pdiag(p, m, "missing required field \"%s\"", key);
	}
	return v;
}

static const struct node *field_key(const struct node *m, const char *key)
{
	const struct node *k = NULL;

	map_get(m, key, &k);
	return k;
}

static const char *want_str(struct pctx *p, const struct node *n, const char *path)
{
	if (n->kind == NK_SCALAR && n->st == ST_STR)
		return n->s;
	bad_type(p, n, path, "string");
	return NULL;
}

static bool want_map(struct pctx *p, const struct node *n, const char *path)
{
	if (n->kind == NK_MAP)
		return true;
	bad_type(p, n, path, "mapping");
	return false;
}

static bool want_seq(struct pctx *p, const struct node *n, const char *path)
{
	if (n->kind == NK_SEQ)
		return true;
	bad_type(p, n, path, "list");
	return false;
}

/* YAML 1.2 core schema integers: decimal, 0o octal, 0x hex. */
static int scalar__int(const char *s, long long *out)
{
	int base = 10;
	bool neg = false;
	char *end;

	if (*s == '-' || *s == '+')
		neg = *s++ == '-';
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'o')) {
		base = s[1] == 'x' ? 16 : 8;
		s += 2;
	}
	if (!isxdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	*out = strtoll(s, &end, base);
	if (errno || *end)
		return -EINVAL;
	if (neg)
		*out = -*out;
	return 0;
}

static bool want_int(struct pctx *p, const struct node *n, const char *path, long long *out)
{
	char qb[QLEN];

	if (n->kind != NK_SCALAR || n->st != ST_INT) {
		bad_type(p, n, path, "integer");
		return false;
	}
	if (scalar__int(n->s, out)) {
		pdiag(p, n, "%s: %s is not an integer in range", path, q(qb, n->s));
		return false;
	}
	return true;
}

struct dupent {
	const char *s;
	const struct node *at;
	size_t idx;
};

static int dupent__cmp(const void *a, const void *b)
{
	const struct dupent *x = a, *y = b;
	int c = strcmp(x->s, y->s);

	if (c)
		return c;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

typedef void (*dup_report_fn)(struct pctx *p, const struct dupent *dup,
			      const struct dupent *first, const void *arg);

/* Sorting keeps this linear-ish for the big lists (100k rule names). */
static void dups__find(struct pctx *p, struct dupent *e, size_t n, dup_report_fn report,
		       const void *arg)
{
	qsort(e, n, sizeof(*e), dupent__cmp);
	for (size_t i = 1, first = 0; i < n; i++) {
		if (strcmp(e[i].s, e[first].s)) {
			first = i;
			continue;
		}
		report(p, &e[i], &e[first], arg);
	}
}

static void dup_key_report(struct pctx *p, const struct dupent *dup, const struct dupent *first,
			   const void *arg)
{
	const char *path = arg;
	char qb[QLEN];

	pdiag(p, dup->at, "duplicate key %s in %s (first at line %d)", q(qb, dup->s),
	      *path ? path : "the document", first->at->line);
}

/* Keys must be scalars, unique, and (when KNOWN is given) one of KNOWN.
 * Most maps have a few keys: compared pairwise on the stack, as a large
 * file has tens of thousands of them. */
static void map_check(struct pctx *p, const struct node *m, const char *path,
		      const char *const *known)
{
	size_t npairs = m->n / 2, nd = 0;
	struct dupent small[16], *e = npairs <= 16 ? small :
		calloc(npairs ? npairs : 1, sizeof(*e));
	char qb[QLEN];

	if (!e)
		p->oom = true;
	for (size_t i = 0; i + 1 < m->n; i += 2) {
		const struct node *k = m->v[i];
		bool ok = !known;

		if (k->kind != NK_SCALAR || is_null(k)) {
			pdiag(p, k, "%s: keys must be strings, got %s",
			      *path ? path : "document", type_name(k));
			continue;
		}
		for (const char *const *f = known; f && *f && !ok; f++)
			ok = !strcmp(*f, k->s);
		if (!ok)
			pdiag(p, k, "unknown field %s in %s", q(qb, k->s),
			      *path ? path : "the document");
		if (e)
			e[nd++] = (struct dupent){ .s = k->s, .at = k, .idx = i };
	}
	if (e == small) {
		for (size_t i = 1; i < nd; i++)
			for (size_t j = 0; j < i; j++)
				if (!strcmp(e[i].s, e[j].s)) {
					dup_key_report(p, &e[i], &e[j], path);
					break;
				}
		return;
	}
	if (e)
		dups__find(p, e, nd, dup_key_report, path);
	free(e);
}

/* ------------------------------------------------------------------ */
/* Value checks                                                         */

static bool is_lower_alnum(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* RFC 1123 label as Kubernetes checks it: [a-z0-9]([-a-z0-9]*[a-z0-9])? */
static bool dns_label_ok(const char *s, size_t len)
{
	if (len < 1 || len > 63 || !is_lower_alnum(s[0]) || !is_lower_alnum(s[len - 1]))
		return false;
	for (size_t i = 0; i < len; i++)
		if (!is_lower_alnum(s[i]) && s[i] != '-')
			return false;
	return true;
}

static bool dns_subdomain_ok(const char *s)
{
	size_t len = strlen(s);

	if (len < 1 || len > 253)
		return false;
	for (const char *l = s;;) {
		const char *dot = strchr(l, '.');
		size_t ll = dot ? (size_t)(dot - l) : strlen(l);

		if (!dns_label_ok(l, ll))
			return false;
		if (!dot)
			return true;
		l = dot + 1;
	}
}

/* Rule names: [a-z0-9]([-a-z0-9.]*[a-z0-9])?, at most 63: they fit
 * sl_rule_meta.rule and read well in a flow record. */
static bool rule_name_ok(const char *s)
{
	size_t len = strlen(s);

	if (len < 1 || len > 63 || !is_lower_alnum(s[0]) || !is_lower_alnum(s[len - 1]))
		return false;
	for (size_t i = 0; i < len; i++)
		if (!is_lower_alnum(s[i]) && s[i] != '-' && s[i] != '.')
			return false;
	return true;
}

static void addr__format(const uint8_t addr[16], bool is_v4, char *out, size_t len)
{
	if (is_v4)
		inet_ntop(AF_INET, addr + 12, out, (socklen_t)len);
	else
		inet_ntop(AF_INET6, addr, out, (socklen_t)len);
}

static bool is_v4_mapped(const uint8_t a[16])
{
	static const uint8_t pfx[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	return !memcmp(a, pfx, sizeof(pfx));
}

/*
 * "a.b.c.d[/n]" or "x:x::x[/n]"; a bare address is a host route. IPv4 is
 * stored v4-mapped so that one LPM trie holds both families and a mapped
 * address in connect6 meets the IPv4 rules.
 */
static int cidr__parse(const char *s, struct pol_peer *pe, char *why, size_t whylen)
{
	char a[INET6_ADDRSTRLEN + 1], net[INET6_ADDRSTRLEN];
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	unsigned int max, n;
	uint8_t addr[16] = { 0 }, masked[16];
	bool v4;

	if (alen >= sizeof(a))
		goto syntax;
	memcpy(a, s, alen);
	a[alen] = '\0';
	if (inet_pton(AF_INET, a, addr + 12) == 1) {
		addr[10] = addr[11] = 0xff;
		v4 = true;
		max = 32;
	} else if (inet_pton(AF_INET6, a, addr) == 1) {
		v4 = false;
		max = 128;
	} else {
		goto syntax;
	}
	n = max;
	if (slash) {
		const char *d = slash + 1;

		if (!*d || strlen(d) > 3)
			goto syntax;
		for (const char *c = d; *c; c++)
			if (!isdigit((unsigned char)*c))
				goto syntax;
		n = (unsigned int)atoi(d);
		if (n > max) {
			snprintf(why, whylen, "prefix length %u is out of range 0-%u", n, max);
			return -EINVAL;
		}
	}
	{
		unsigned int bits = v4 ? 96 + n : n;

		for (unsigned int i = 0; i < 16; i++) {
			unsigned int lo = i * 8;
			uint8_t m = bits >= lo + 8 ? 0xff : bits <= lo ? 0 : (uint8_t)(0xff << (8 - (bits - lo)));

			masked[i] = addr[i] & m;
		}
		if (memcmp(masked, addr, 16)) {
			addr__format(masked, v4, net, sizeof(net));
			snprintf(why, whylen, "%s has host bits set; did you mean %s/%u?", s, net, n);
			return -EINVAL;
		}
		/* A literal ::ffff:a.b.c.d/n>=96 is the same IPv4 prefix. */
		if (!v4 && bits >= 96 && is_v4_mapped(addr))
			v4 = true;
		pe->bits = (uint8_t)bits;
	}
	memcpy(pe->addr, addr, 16);
	pe->is_v4 = v4;
	return 0;
syntax:
	snprintf(why, whylen, "not a valid CIDR (expected a.b.c.d/n, x:x::x/n or a bare "
		 "address)");
	return -EINVAL;
}

/* RFC 1123 host name, lower-cased, trailing dot stripped, into OUT[254]. */
static int fqdn__check(const char *s, char out[254], char *why, size_t whylen)
{
	size_t len = strlen(s);
	uint8_t tmp[16];

	if (strchr(s, '*')) {
		snprintf(why, whylen,
			 "wildcard fqdn is not supported yet: sluice resolves names itself and "
			 "cannot enumerate a wildcard; list the names");
		return -EINVAL;
	}
	if (inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1) {
		snprintf(why, whylen, "an IP address, not a name; use cidr for addresses");
		return -EINVAL;
	}
	if (len && s[len - 1] == '.')
		len--;
	if (len < 1 || len > 253) {
		snprintf(why, whylen, "a host name has 1 to 253 characters");
		return -EINVAL;
	}
	for (size_t i = 0; i < len; i++)
		out[i] = (char)tolower((unsigned char)s[i]);
	out[len] = '\0';
	for (const char *l = out;;) {
		const char *dot = strchr(l, '.');
		size_t ll = dot ? (size_t)(dot - l) : strlen(l);

		if (!dns_label_ok(l, ll)) {
			snprintf(why, whylen,
				 "not a valid host name: each dot-separated label has 1 to 63 of "
				 "a-z, 0-9 and '-', and does not start or end with '-'");
			return -EINVAL;
		}
		if (!dot)
			return 0;
		l = dot + 1;
	}
}

/* ------------------------------------------------------------------ */
/* Documents                                                            */

static char *p_strdup(struct pctx *p, const char *s)
{
	char *r = strdup(s);

	if (!r)
		p->oom = true;
	return r;
}

static void *p_calloc(struct pctx *p, size_t n, size_t size)
{
	void *r = calloc(n ? n : 1, size);

	if (!r)
		p->oom = true;
	return r;
}

static void doc__free(struct pol_doc *d)
{
	free(d->name);
	free(d->namespace);
	free(d->file);
	for (size_t i = 0; i < d->ncgroup_paths; i++)
		free(d->cgroup_paths[i]);
	free(d->cgroup_paths);
	for (size_t i = 0; i < d->npod_labels; i++) {
		free(d->pod_labels[i].key);
		free(d->pod_labels[i].value);
	}
	free(d->pod_labels);
	for (size_t i = 0; i < d->nns_labels; i++) {
		free(d->ns_labels[i].key);
		free(d->ns_labels[i].value);
	}
	free(d->ns_labels);
	for (size_t i = 0; i < d->negress; i++) {
		struct pol_rule *r = &d->egress[i];

		free(r->name);
		for (size_t j = 0; j < r->nto; j++) {
			free(r->to[j].fqdn);
			free(r->to[j].svc_name);
			free(r->to[j].svc_namespace);
		}
		free(r->to);
		free(r->ports);
		for (size_t j = 0; j < r->ntools; j++)
			free(r->tools[j]);
		free(r->tools);
	}
	free(d->egress);
	memset(d, 0, sizeof(*d));
}

/* A map of strings to strings (labels); stored in OUT when OUT != NULL. */
static void labels__check(struct pctx *p, const struct node *m, const char *path,
			  struct pol_label **out, size_t *nout)
{
	char sub[PATHLEN];

	if (!want_map(p, m, path))
		return;
	map_check(p, m, path, NULL);
	if (out && !(*out = p_calloc(p, m->n / 2, sizeof(**out))))
		return;
	for (size_t i = 0; i + 1 < m->n; i += 2) {
		const struct node *k = m->v[i], *v = m->v[i + 1];
		const char *val;

		if (k->kind != NK_SCALAR || is_null(k))
			continue;
		path_key(sub, path, k->s);
		val = want_str(p, v, sub);
		if (!val || !out)
			continue;
		(*out)[*nout].key = p_strdup(p, k->s);
		(*out)[*nout].value = p_strdup(p, val);
		(*nout)++;
	}
}

static void match_labels__check(struct pctx *p, const struct node *sel, const char *path,
				struct pol_label **out, size_t *nout)
{
	static const char *const known[] = { "matchLabels", NULL };
	const struct node *ml;
	char sub[PATHLEN];

	if (!want_map(p, sel, path))
		return;
	map_check(p, sel, path, known);
	ml = field(p, sel, path, "matchLabels", false, sub);
	if (ml)
		labels__check(p, ml, sub, out, nout);
}

static void metadata__check(struct pctx *p, struct filedoc *fd, const struct node *m, bool kind_ok)
{
	static const char *const known[] = {
		"name", "namespace", "labels", "annotations",
		/* Written by the API server; a policy exported from a
		 * cluster must validate as it is. */
		"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
		"finalizers", "ownerReferences", "generateName", "deletionTimestamp",
		"deletionGracePeriodSeconds", "selfLink", NULL,
	};
	struct pol_doc *d = &fd->d;
	const struct node *n;
	char sub[PATHLEN], qb[QLEN];
	const char *s;

	map_check(p, m, "metadata", known);
	if ((n = field(p, m, "metadata", "name", true, sub)) && (s = want_str(p, n, sub))) {
		if (!dns_subdomain_ok(s))
			pdiag(p, n, "%s: %s is not a valid name: at most 253 of a-z, 0-9, '-' and "
			      "'.', starting and ending with a letter or digit", sub, q(qb, s));
		else
			d->name = p_strdup(p, s);
		fd->name_line = n->line;
		fd->name_col = n->col;
	}
	n = field(p, m, "metadata", "namespace", false, sub);
	if (n && kind_ok && d->kind == POL_CLUSTER) {
		pdiag(p, field_key(m, "namespace"), "%s: a ClusterAgentPolicy is cluster-scoped "
		      "and has no namespace; use namespaceSelector, or make it an AgentPolicy", sub);
	} else if (n && (s = want_str(p, n, sub))) {
		if (!dns_label_ok(s, strlen(s)))
			pdiag(p, n, "%s: %s is not a valid namespace: at most 63 of a-z, 0-9 and "
			      "'-', starting and ending with a letter or digit", sub, q(qb, s));
		else
			d->namespace = p_strdup(p, s);
	}
	if (!n && (!kind_ok || d->kind == POL_AGENT))
		d->namespace = p_strdup(p, "default");
	if ((n = field(p, m, "metadata", "labels", false, sub)))
		labels__check(p, n, sub, NULL, NULL);
	if ((n = field(p, m, "metadata", "annotations", false, sub)))
		labels__check(p, n, sub, NULL, NULL);
}

static void selector__check(struct pctx *p, struct pol_doc *d, const struct node *sel)
{
	static const char *const known[] = { "podSelector", "cgroupPaths", NULL };
	const char *path = "spec.selector";
	const struct node *ps, *cg;
	char sub[PATHLEN], ip[PATHLEN], qb[QLEN];

	if (!want_map(p, sel, path))
		return;
	map_check(p, sel, path, known);
	ps = field(p, sel, path, "podSelector", false, sub);
	if (ps)
		match_labels__check(p, ps, sub, &d->pod_labels, &d->npod_labels);
	cg = field(p, sel, path, "cgroupPaths", false, sub);
	if (cg && want_seq(p, cg, sub)) {
		if (!(d->cgroup_paths = p_calloc(p, cg->n, sizeof(char *))))
			return;
		for (size_t i = 0; i < cg->n; i++) {
			const char *s, *c;

			path_index(ip, sub, i);
			if (!(s = want_str(p, cg->v[i], ip)))
				continue;
			/* Paths are below the cgroup2 mount; a leading "/"
			 * is how people write them anyway. */
			for (c = s; *c == '/'; c++)
				;
			if (!*c) {
				pdiag(p, cg->v[i], "%s: empty cgroup path; give a path below the "
				      "cgroup2 mount, e.g. \"agents.slice/*\"", ip);
				continue;
			}
			for (const char *t = c; t; t = strchr(t, '/')) {
				t += *t == '/';
				if (!strncmp(t, "..", 2) && (t[2] == '/' || !t[2])) {
					pdiag(p, cg->v[i], "%s: %s must not contain \"..\": cgroup "
					      "paths stay below the cgroup2 mount", ip, q(qb, s));
					c = NULL;
					break;
				}
			}
			if (c)
				d->cgroup_paths[d->ncgroup_paths++] = p_strdup(p, c);
		}
	}
	if (!ps && !cg)
		pdiag(p, sel, "%s: needs podSelector or cgroupPaths (or both)", path);
}

static void peer__check(struct pctx *p, struct pol_doc *d, struct pol_peer *pe,
			const struct node *it, const char *path)
{
	static const char *const known[] = { "cidr", "fqdn", "service", NULL };
	static const char *const svc_known[] = { "name", "namespace", NULL };
	const char *kinds[3] = { NULL };
	const struct node *c, *f, *sv, *n;
	char sub[PATHLEN], sub2[PATHLEN], qb[QLEN], why[160];
	size_t nk = 0;
	const char *s;

	pe->line = it->line;
	pe->col = it->col;
	if (!want_map(p, it, path))
		return;
	map_check(p, it, path, known);
	if ((c = map_get(it, "cidr", NULL)))
		kinds[nk++] = "cidr";
	if ((f = map_get(it, "fqdn", NULL)))
		kinds[nk++] = "fqdn";
	if ((sv = map_get(it, "service", NULL)))
		kinds[nk++] = "service";
	if (nk == 0) {
		pdiag(p, it, "%s: needs one of cidr, fqdn or service", path);
		return;
	}
	if (nk > 1) {
		pdiag(p, it, "%s: has both %s and %s; give each destination its own list item",
		      path, kinds[0], kinds[1]);
		return;
	}
	if (c) {
		pe->kind = PEER_CIDR;
		path_field(sub, path, "cidr");
		if ((s = want_str(p, c, sub)) && cidr__parse(s, pe, why, sizeof(why))) {
			if (strstr(why, "host bits"))
				pdiag(p, c, "%s: %s", sub, why);
			else
				pdiag(p, c, "%s: %s: %s", sub, q(qb, s), why);
		}
	} else if (f) {
		char name[254];

		pe->kind = PEER_FQDN;
		path_field(sub, path, "fqdn");
		if ((s = want_str(p, f, sub))) {
			if (fqdn__check(s, name, why, sizeof(why)))
				pdiag(p, f, "%s: %s: %s", sub, q(qb, s), why);
			else
				pe->fqdn = p_strdup(p, name);
		}
	} else {
		pe->kind = PEER_SERVICE;
		path_field(sub, path, "service");
		if (!want_map(p, sv, sub))
			return;
		map_check(p, sv, sub, svc_known);
		if ((n = field(p, sv, sub, "name", true, sub2)) && (s = want_str(p, n, sub2))) {
			if (!dns_label_ok(s, strlen(s)))
				pdiag(p, n, "%s: %s is not a valid service name", sub2, q(qb, s));
			else
				pe->svc_name = p_strdup(p, s);
		}
		if ((n = field(p, sv, sub, "namespace", false, sub2))) {
			if ((s = want_str(p, n, sub2))) {
				if (!dns_label_ok(s, strlen(s)))
					pdiag(p, n, "%s: %s is not a valid namespace", sub2, q(qb, s));
				else
					pe->svc_namespace = p_strdup(p, s);
			}
		} else if (d->namespace) {
			pe->svc_namespace = p_strdup(p, d->namespace);
		} else if (d->kind == POL_CLUSTER) {
			pdiag(p, sv, "%s: missing required field \"namespace\" (a "
			      "ClusterAgentPolicy has no namespace to default to)", sub);
		}
	}
}

static void port__check(struct pctx *p, struct pol_port *pp, const struct node *it,
			const char *path)
{
	static const char *const known[] = { "port", "endPort", "protocol", NULL };
	const struct node *pn, *en, *pr;
	char sub[PATHLEN], qb[QLEN];
	long long port = 0, end;
	const char *s;

	pp->line = it->line;
	pp->col = it->col;
	pp->proto = SL_PROTO_TCP;
	/* No port: every port of the protocol, as in a NetworkPolicy. */
	pp->port = 0;
	pp->end_port = 65535;
	if (!want_map(p, it, path))
		return;
	map_check(p, it, path, known);
	pn = field(p, it, path, "port", false, sub);
	if (pn && want_int(p, pn, sub, &port)) {
		if (port < 1 || port > 65535) {
			pdiag(p, pn, "%s: %lld is out of range 1-65535", sub, port);
			port = 0;
		} else {
			pp->port = pp->end_port = (uint16_t)port;
		}
	}
	en = field(p, it, path, "endPort", false, sub);
	if (en && !pn) {
		pdiag(p, field_key(it, "endPort"), "%s: endPort needs port (the start of the "
		      "range)", path);
	} else if (en && want_int(p, en, sub, &end)) {
		if (end < 1 || end > 65535)
			pdiag(p, en, "%s: %lld is out of range 1-65535", sub, end);
		else if (port && end < port)
			pdiag(p, en, "%s: %lld is less than port %lld", sub, end, port);
		else
			pp->end_port = (uint16_t)end;
	}
	pr = field(p, it, path, "protocol", false, sub);
	if (pr && (s = want_str(p, pr, sub))) {
		if (!strcmp(s, "TCP"))
			pp->proto = SL_PROTO_TCP;
		else if (!strcmp(s, "UDP"))
			pp->proto = SL_PROTO_UDP;
		else if (!strcmp(s, "SCTP"))
			pp->proto = SL_PROTO_SCTP;
		else
			pdiag(p, pr, "%s: expected TCP, UDP or SCTP, got %s", sub, q(qb, s));
	}
}

static void dup_tool_report(struct pctx *p, const struct dupent *dup, const struct dupent *first,
			    const void *arg)
{
	char qb[QLEN], ip[PATHLEN];

	path_index(ip, arg, dup->idx);
	pdiag(p, dup->at, "%s: duplicate tool %s", ip, q(qb, dup->s));
}

static void rule__check(struct pctx *p, struct pol_doc *d, struct pol_rule *r,
			const struct node *it, const char *path)
{
	static const char *const known[] = { "name", "class", "to", "ports", "tools", NULL };
	const struct node *n;
	char sub[PATHLEN], ip[PATHLEN], qb[QLEN];
	const char *s;

	r->line = it->line;
	r->col = it->col;
	r->class = SL_CLASS_OTHER;
	if (!want_map(p, it, path))
		return;
	map_check(p, it, path, known);
	if ((n = field(p, it, path, "name", true, sub)) && (s = want_str(p, n, sub))) {
		if (!rule_name_ok(s))
			pdiag(p, n, "%s: %s is not a valid rule name: at most 63 of a-z, 0-9, '-' "
			      "and '.', starting and ending with a letter or digit", sub, q(qb, s));
		else
			r->name = p_strdup(p, s);
		/* Position of the name, for duplicate reports. */
		r->line = n->line;
		r->col = n->col;
	}
	if ((n = field(p, it, path, "class", false, sub)) && (s = want_str(p, n, sub))) {
		int c = policy__class_parse(s);

		if (c < 0)
			pdiag(p, n, "%s: expected llm, tool, agent, gateway, dns or other, got %s",
			      sub, q(qb, s));
		else
			r->class = (uint8_t)c;
	}
	if ((n = field(p, it, path, "to", true, sub)) && want_seq(p, n, sub)) {
		if (!n->n)
			pdiag(p, n, "%s: needs at least one destination", sub);
		else if ((r->to = p_calloc(p, n->n, sizeof(*r->to))))
			for (; r->nto < n->n; r->nto++) {
				path_index(ip, sub, r->nto);
				peer__check(p, d, &r->to[r->nto], n->v[r->nto], ip);
			}
	}
	if ((n = field(p, it, path, "ports", false, sub)) && want_seq(p, n, sub) && n->n &&
	    (r->ports = p_calloc(p, n->n, sizeof(*r->ports))))
		for (; r->nports < n->n; r->nports++) {
			path_index(ip, sub, r->nports);
			port__check(p, &r->ports[r->nports], n->v[r->nports], ip);
		}
	if ((n = field(p, it, path, "tools", false, sub)) && want_seq(p, n, sub) && n->n) {
		struct dupent *e = p_calloc(p, n->n, sizeof(*e));
		size_t ne = 0;

		if (!e || !(r->tools = p_calloc(p, n->n, sizeof(char *)))) {
			free(e);
			return;
		}
		for (size_t i = 0; i < n->n; i++) {
			path_index(ip, sub, i);
			if (!(s = want_str(p, n->v[i], ip)))
				continue;
			if (!*s) {
				pdiag(p, n->v[i], "%s: empty tool name", ip);
				continue;
			}
			r->tools[r->ntools++] = p_strdup(p, s);
			e[ne++] = (struct dupent){ .s = s, .at = n->v[i], .idx = i };
		}
		dups__find(p, e, ne, dup_tool_report, sub);
		free(e);
	}
}

static void dup_rule_report(struct pctx *p, const struct dupent *dup, const struct dupent *first,
			    const void *arg)
{
	const struct pol_doc *d = arg;
	const struct pol_rule *r = &d->egress[dup->idx];
	size_t nallow = 0;
	char qb[QLEN];

	/* egress rules come first, then egressDeny: the index in its list */
	while (nallow < d->negress && !d->egress[nallow].deny)
		nallow++;
	pdiag_at(p, r->line, r->col, "%s[%zu].name: duplicate rule name %s (first at line %d)",
		 r->deny ? "spec.egressDeny" : "spec.egress",
		 r->deny ? dup->idx - nallow : dup->idx,
		 q(qb, dup->s), d->egress[first->idx].line);
}

static void rules__check(struct pctx *p, struct pol_doc *d, const struct node *seq,
			 const char *path, bool deny)
{
	char ip[PATHLEN];

	if (!want_seq(p, seq, path))
		return;
	for (size_t i = 0; i < seq->n; i++) {
		struct pol_rule *r = &d->egress[d->negress++];

		r->deny = deny;
		path_index(ip, path, i);
		rule__check(p, d, r, seq->v[i], ip);
	}
}

static void spec__check(struct pctx *p, struct pol_doc *d, const struct node *sp, bool kind_ok)
{
	static const char *const known[] = {
		"selector", "namespaceSelector", "mode", "dns", "egress", "egressDeny", NULL,
	};
	const struct node *n, *eg, *ed;
	char sub[PATHLEN], qb[QLEN];
	bool agent = kind_ok && d->kind == POL_AGENT;
	const char *s;
	size_t nrules = 0;

	if (!want_map(p, sp, "spec"))
		return;
	map_check(p, sp, "spec", known);
	if ((n = field(p, sp, "spec", "selector", true, sub)))
		selector__check(p, d, n);
	if ((n = field(p, sp, "spec", "namespaceSelector", false, sub))) {
		if (agent)
			pdiag(p, field_key(sp, "namespaceSelector"), "%s: only a "
			      "ClusterAgentPolicy selects namespaces; an AgentPolicy applies to "
			      "its own namespace", sub);
		else
			match_labels__check(p, n, sub, &d->ns_labels, &d->nns_labels);
	}
	if ((n = field(p, sp, "spec", "mode", false, sub)) && (s = want_str(p, n, sub))) {
		if (!strcmp(s, "enforce"))
			d->mode = POL_ENFORCE;
		else if (!strcmp(s, "audit"))
			d->mode = POL_AUDIT;
		else
			pdiag(p, n, "%s: expected enforce or audit, got %s", sub, q(qb, s));
	}
	if ((n = field(p, sp, "spec", "dns", false, sub)) && (s = want_str(p, n, sub))) {
		if (!strcmp(s, "allow"))
			d->dns_deny = false;
		else if (!strcmp(s, "deny"))
			d->dns_deny = true;
		else
			pdiag(p, n, "%s: expected allow or deny, got %s", sub, q(qb, s));
	}
	eg = field(p, sp, "spec", "egress", false, sub);
	if (eg && eg->kind == NK_SEQ)
		nrules += eg->n;
	ed = field(p, sp, "spec", "egressDeny", false, sub);
	if (ed && agent) {
		pdiag(p, field_key(sp, "egressDeny"), "%s: only a ClusterAgentPolicy has "
		      "egressDeny rules; an AgentPolicy only allows (anything not allowed is "
		      "denied)", sub);
		ed = NULL;
	}
	if (ed && ed->kind == NK_SEQ)
		nrules += ed->n;
	if (nrules && !(d->egress = p_calloc(p, nrules, sizeof(*d->egress))))
		return;
	if (eg)
		rules__check(p, d, eg, "spec.egress", false);
	if (ed)
		rules__check(p, d, ed, "spec.egressDeny", true);

	/* Names are unique per document: they are what a verdict reports. */
	if (d->negress) {
		struct dupent *e = p_calloc(p, d->negress, sizeof(*e));
		size_t ne = 0;

		if (!e)
			return;
		for (size_t i = 0; i < d->negress; i++)
			if (d->egress[i].name)
				e[ne++] = (struct dupent){ .s = d->egress[i].name, .idx = i };
		dups__find(p, e, ne, dup_rule_report, d);
		free(e);
	}
}

static struct filedoc *docs__append(struct pctx *p)
{
	if (p->ndocs == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 4;
		struct filedoc *v = realloc(p->docs, cap * sizeof(*v));

		if (!v) {
			p->oom = true;
			return NULL;
		}
		p->docs = v;
		p->cap = cap;
	}
	memset(&p->docs[p->ndocs], 0, sizeof(p->docs[0]));
	return &p->docs[p->ndocs++];
}

static void doc__check(struct pctx *p, const struct node *root)
{
	static const char *const known[] = {
		"apiVersion", "kind", "metadata", "spec",
		"status",	/* written by controllers; ignored */
		NULL,
	};
	struct filedoc *fd = docs__append(p);
	const struct node *n;
	char sub[PATHLEN], qb[QLEN];
	bool kind_ok = false;
	const char *s;

	if (!fd)
		return;
	fd->d.line = root->line;
	fd->d.file = p_strdup(p, p->file);
	map_check(p, root, "", known);
	if ((n = field(p, root, "", "apiVersion", true, sub)) && (s = want_str(p, n, sub)) &&
	    strcmp(s, API_VERSION))
		pdiag(p, n, "apiVersion: expected \"" API_VERSION "\", got %s", q(qb, s));
	if ((n = field(p, root, "", "kind", true, sub)) && (s = want_str(p, n, sub))) {
		kind_ok = true;
		if (!strcmp(s, "AgentPolicy"))
			fd->d.kind = POL_AGENT;
		else if (!strcmp(s, "ClusterAgentPolicy"))
			fd->d.kind = POL_CLUSTER;
		else {
			kind_ok = false;
			pdiag(p, n, "kind: expected AgentPolicy or ClusterAgentPolicy, got %s",
			      q(qb, s));
		}
	}
	if ((n = field(p, root, "", "metadata", true, sub)) && want_map(p, n, sub))
		metadata__check(p, fd, n, kind_ok);
	if ((n = field(p, root, "", "spec", true, sub)))
		spec__check(p, &fd->d, n, kind_ok);
}

/* A document is a policy object, or a list of them (JSON arrays, and the
 * same shape in YAML for symmetry); empty documents are skipped. */
static void root__check(struct pctx *p, const struct node *root)
{
	if (is_null(root))
		return;
	if (root->kind == NK_MAP) {
		doc__check(p, root);
		return;
	}
	if (root->kind == NK_SEQ) {
		for (size_t i = 0; i < root->n; i++) {
			char ip[PATHLEN];

			if (root->v[i]->kind == NK_MAP) {
				doc__check(p, root->v[i]);
				continue;
			}
			path_index(ip, "", i);
			pdiag(p, root->v[i], "%s: expected a policy object (mapping), got %s", ip,
			      type_name(root->v[i]));
		}
		return;
	}
	pdiag(p, root, "expected a policy object (mapping), got %s", type_name(root));
}

/* ------------------------------------------------------------------ */
/* YAML                                                                 */

/* Plain scalars resolved with the YAML 1.2 core schema, so that "443" in
 * quotes is a string and 443 is an integer, as the API server sees them. */
/* YAML 1.2 core schema's null, bool and special float forms, or -1. Looked
 * up by first byte: "name" or "to" would otherwise meet 23 strcmps. */
static int yaml__special(const char *s)
{
	static const char *const nulls[] = { "null", "Null", "NULL", NULL };
	static const char *const bools[] = { "true", "True", "TRUE", "false", "False", "FALSE", NULL };
	static const char *const floats[] = {
		".inf", ".Inf", ".INF", "-.inf", "-.Inf", "-.INF", "+.inf", "+.Inf", "+.INF",
		".nan", ".NaN", ".NAN", NULL,
	};
	const char *const *t;
	int type;

	switch (s[0]) {
	case '\0':
		return ST_NULL;
	case '~':
		return s[1] ? -1 : ST_NULL;
	case 'n': case 'N':
		t = nulls, type = ST_NULL;
		break;
	case 't': case 'T': case 'f': case 'F':
		t = bools, type = ST_BOOL;
		break;
	case '.': case '+': case '-':
		t = floats, type = ST_FLOAT;
		break;
	default:
		return -1;
	}
	for (; *t; t++)
		if ((*t)[0] == s[0] && !strcmp(s, *t))
			return type;
	return -1;
}

static enum stype yaml__plain_type(const char *s)
{
	long long ll;
	const char *c = s;
	bool digits = false;
	int special;

	/* Most scalars are names: no special form starts with their first
	 * byte. */
	if (s[0] && !strchr("~nNtTfF.+-0123456789", s[0]))
		return ST_STR;
	special = yaml__special(s);
	if (special >= 0)
		return (enum stype)special;
	if (isdigit((unsigned char)s[*s == '-' || *s == '+']) && !scalar__int(s, &ll))
		return ST_INT;
	/* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
	if (*c == '-' || *c == '+')
		c++;
	while (isdigit((unsigned char)*c)) {
		c++;
		digits = true;
	}
	if (*c == '.') {
		c++;
		while (isdigit((unsigned char)*c)) {
			c++;
			digits = true;
		}
	}
	if (digits && (*c == 'e' || *c == 'E')) {
		c++;
		if (*c == '-' || *c == '+')
			c++;
		if (!isdigit((unsigned char)*c))
			return ST_STR;
		while (isdigit((unsigned char)*c))
			c++;
	}
	return digits && !*c ? ST_FLOAT : ST_STR;
}

static enum stype yaml__scalar_type(const yaml_event_t *ev)
{
	const char *tag = (const char *)ev->data.scalar.tag;
	const char *v = (const char *)ev->data.scalar.value;

	if (tag && strcmp(tag, "!")) {
		if (!strcmp(tag, YAML_INT_TAG))
			return ST_INT;
		if (!strcmp(tag, YAML_BOOL_TAG))
			return ST_BOOL;
		if (!strcmp(tag, YAML_NULL_TAG))
			return ST_NULL;
		if (!strcmp(tag, YAML_FLOAT_TAG))
			return ST_FLOAT;
		return ST_STR;
	}
	if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE || tag)
		return ST_STR;
	return yaml__plain_type(v);
}

struct yframe {
	struct node *n;
	char *anchor;
};

struct yanchor {
	char *name;
	struct node *n;		/* owned by the document tree */
};

struct yload {
	struct yframe *stack;
	size_t depth, cap;
	struct yanchor *anchors;
	size_t nanchors, acap;
	struct node *root;
};

static void yload__reset(struct yload *y)
{
	for (size_t i = 0; i < y->depth; i++)
		free(y->stack[i].anchor);
	y->depth = 0;
	for (size_t i = 0; i < y->nanchors; i++)
		free(y->anchors[i].name);
	y->nanchors = 0;
	y->root = NULL;
}

static void yload__anchor(struct pctx *p, struct yload *y, const yaml_char_t *name, struct node *n)
{
	if (!name)
		return;
	if (y->nanchors == y->acap) {
		size_t cap = y->acap ? y->acap * 2 : 8;
		struct yanchor *v = realloc(y->anchors, cap * sizeof(*v));

		if (!v) {
			p->oom = true;
			return;
		}
		y->anchors = v;
		y->acap = cap;
	}
	y->anchors[y->nanchors].name = p_strdup(p, (const char *)name);
	y->anchors[y->nanchors++].n = n;
}

/* Attach a finished or started node to its parent; the first is the root. */
static int yload__add(struct pctx *p, struct yload *y, struct node *n)
{
	if (!y->depth) {
		y->root = n;
		return 0;
	}
	return node__push(p, y->stack[y->depth - 1].n, n);
}

static int yload__event(struct pctx *p, struct yload *y, const yaml_event_t *ev)
{
	int line = (int)ev->start_mark.line + 1, col = (int)ev->start_mark.column + 1;
	struct node *n;

	switch (ev->type) {
	case YAML_DOCUMENT_START_EVENT:
		yload__reset(y);
		arena__reset(p, false);
		return 0;
	case YAML_DOCUMENT_END_EVENT:
		if (y->root)
			root__check(p, y->root);
		yload__reset(y);
		arena__reset(p, false);
		return 0;
	case YAML_SCALAR_EVENT:
		if (!(n = node__new(p, NK_SCALAR, line, col)))
			return -ENOMEM;
		n->st = yaml__scalar_type(ev);
		n->s = node__strndup(p, (const char *)ev->data.scalar.value,
				     ev->data.scalar.length);
		if (!n->s)
			return -ENOMEM;
		if (yload__add(p, y, n))
			return -ENOMEM;
		yload__anchor(p, y, ev->data.scalar.anchor, n);
		return 0;
	case YAML_SEQUENCE_START_EVENT:
	case YAML_MAPPING_START_EVENT:
		n = node__new(p, ev->type == YAML_MAPPING_START_EVENT ? NK_MAP : NK_SEQ, line, col);
		if (!n || yload__add(p, y, n))
			return -ENOMEM;
		if (y->depth == y->cap) {
			size_t cap = y->cap ? y->cap * 2 : 16;
			struct yframe *v = realloc(y->stack, cap * sizeof(*v));

			if (!v) {
				p->oom = true;
				return -ENOMEM;
			}
			y->stack = v;
			y->cap = cap;
		}
		{
			const yaml_char_t *a = ev->type == YAML_MAPPING_START_EVENT ?
				ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;

			y->stack[y->depth].n = n;
			y->stack[y->depth].anchor = a ? p_strdup(p, (const char *)a) : NULL;
			y->depth++;
		}
		return 0;
	case YAML_SEQUENCE_END_EVENT:
	case YAML_MAPPING_END_EVENT:
		if (!y->depth)
			return 0;
		y->depth--;
		/* Registered only now: an alias inside its own anchor cannot
		 * see it, so the tree stays a tree. */
		yload__anchor(p, y, (const yaml_char_t *)y->stack[y->depth].anchor,
			      y->stack[y->depth].n);
		free(y->stack[y->depth].anchor);
		return 0;
	case YAML_ALIAS_EVENT: {
		const char *name = (const char *)ev->data.alias.anchor;
		struct node *src = NULL;
		char qb[QLEN];

		for (size_t i = y->nanchors; i-- > 0 && !src;)
			if (y->anchors[i].name && !strcmp(y->anchors[i].name, name))
				src = y->anchors[i].n;
		if (!src) {
			pdiag_at(p, line, col, "YAML: unknown alias %s", q(qb, name));
			return -EINVAL;
		}
		if (!(n = node__copy(p, src))) {
			if (!p->oom)
				pdiag_at(p, line, col, "YAML: aliases expand to more than %lu nodes",
					 ALIAS_BUDGET);
			return -EINVAL;
		}
		return yload__add(p, y, n);
	}
	default:
		return 0;
	}
}

static void yaml__load(struct pctx *p, const char *buf, size_t len)
{
	struct yload y = { 0 };
	yaml_parser_t ps;
	yaml_event_t ev;

	if (!yaml_parser_initialize(&ps)) {
		p->oom = true;
		return;
	}
	yaml_parser_set_input_string(&ps, (const unsigned char *)buf, len);
	for (;;) {
		int done, line, col;

		if (!yaml_parser_parse(&ps, &ev)) {
			if (ps.error == YAML_MEMORY_ERROR) {
				p->oom = true;
				break;
			}
			if (ps.error == YAML_READER_ERROR) {
				pos_of(buf, len, ps.problem_offset, &line, &col);
			} else {
				line = (int)ps.problem_mark.line + 1;
				col = (int)ps.problem_mark.column + 1;
			}
			if (ps.context)
				pdiag_at(p, line, col, "YAML syntax error: %s (%s at line %d)",
					 ps.problem ? ps.problem : "invalid input", ps.context,
					 (int)ps.context_mark.line + 1);
			else
				pdiag_at(p, line, col, "YAML syntax error: %s",
					 ps.problem ? ps.problem : "invalid input");
			break;
		}
		done = ev.type == YAML_STREAM_END_EVENT;
		if (yload__event(p, &y, &ev)) {
			yaml_event_delete(&ev);
			break;
		}
		yaml_event_delete(&ev);
		if (done)
			break;
	}
	yload__reset(&y);
	free(y.stack);
	free(y.anchors);
	yaml_parser_delete(&ps);
}

/* ------------------------------------------------------------------ */
/* JSON                                                                 */

/*
 * cJSON parses and unescapes but keeps no positions. This cursor walks
 * the same text in step with the parsed tree (which is known valid by
 * then), so each key and value gets the line:col it started at.
 */
struct jscan {
	const char *buf;
	size_t len, off;
	int line, col;
};

static void js__adv(struct jscan *s, size_t n)
{
	for (; n && s->off < s->len; n--, s->off++) {
		unsigned char ch = (unsigned char)s->buf[s->off];

		if (ch == '\n') {
			s->line++;
			s->col = 1;
		} else if ((ch & 0xc0) != 0x80) {
			s->col++;
		}
	}
}

static char js__peek(const struct jscan *s)
{
	return s->off < s->len ? s->buf[s->off] : '\0';
}

/* cJSON skips every byte <= 32 as white space; so must we. */
static void js__ws(struct jscan *s)
{
	while (s->off < s->len && (unsigned char)s->buf[s->off] <= 32)
		js__adv(s, 1);
}

static void js__skip_string(struct jscan *s)
{
	js__adv(s, 1);
	while (s->off < s->len && s->buf[s->off] != '"')
		js__adv(s, s->buf[s->off] == '\\' ? 2 : 1);
	js__adv(s, 1);
}

static size_t js__token_len(const struct jscan *s)
{
	size_t n = 0;

	while (s->off + n < s->len && !strchr(",:]}", s->buf[s->off + n]) &&
	       (unsigned char)s->buf[s->off + n] > 32)
		n++;
	return n;
}

static struct node *json__build(struct pctx *p, const cJSON *it, struct jscan *s)
{
	struct node *n;
	size_t tl;

	js__ws(s);
	if (cJSON_IsObject(it) || cJSON_IsArray(it)) {
		bool obj = cJSON_IsObject(it);

		if (!(n = node__new(p, obj ? NK_MAP : NK_SEQ, s->line, s->col)))
			return NULL;
		js__adv(s, 1);
		for (const cJSON *c = it->child; c; c = c->next) {
			struct node *v;

			js__ws(s);
			if (obj) {
				struct node *k = node__new(p, NK_SCALAR, s->line, s->col);

				if (!k || !(k->s = node__strndup(p, c->string, strlen(c->string))) ||
				    node__push(p, n, k))
					return NULL;
				js__skip_string(s);
				js__ws(s);
				js__adv(s, 1);	/* : */
			}
			if (!(v = json__build(p, c, s)) || node__push(p, n, v))
				return NULL;
			js__ws(s);
			if (js__peek(s) == ',')
				js__adv(s, 1);
		}
		js__ws(s);
		js__adv(s, 1);	/* } or ] */
		return n;
	}
	if (!(n = node__new(p, NK_SCALAR, s->line, s->col)))
		return NULL;
	if (cJSON_IsString(it)) {
		n->st = ST_STR;
		n->s = node__strndup(p, it->valuestring, strlen(it->valuestring));
		js__skip_string(s);
	} else {
		tl = js__token_len(s);
		/* The source text, not valuedouble: 443 and 443.0 differ. */
		n->s = node__strndup(p, s->buf + s->off, tl);
		if (cJSON_IsNumber(it))
			n->st = n->s && strspn(n->s, "-0123456789") == tl ? ST_INT : ST_FLOAT;
		else if (cJSON_IsBool(it))
			n->st = ST_BOOL;
		else
			n->st = ST_NULL;
		js__adv(s, tl);
	}
	return n->s ? n : NULL;
}

/*
 * cJSON's error pointer is sometimes a character late or inside a string,
 * so syntax is checked here first, to say what is wrong at the right
 * place. The grammar is cJSON's (any byte <= 32 is white space, leading
 * zeros allowed), so whatever passes here, cJSON parses.
 */
struct jsyn {
	const char *b;
	size_t len, off;
	const char *msg;
	int depth;
};

static bool jsyn__fail(struct jsyn *j, const char *msg)
{
	if (!j->msg)
		j->msg = msg;
	return false;
}

static void jsyn__ws(struct jsyn *j)
{
	while (j->off < j->len && (unsigned char)j->b[j->off] <= 32)
		j->off++;
}

static bool jsyn__string(struct jsyn *j)
{
	size_t start = j->off++;

	while (j->off < j->len && j->b[j->off] != '"') {
		if (j->b[j->off] != '\\') {
			j->off++;
			continue;
		}
		if (j->off + 1 >= j->len)
			break;
		if (j->b[j->off + 1] == 'u') {
			for (int i = 2; i < 6; i++)
				if (j->off + (size_t)i >= j->len ||
				    !isxdigit((unsigned char)j->b[j->off + (size_t)i]))
					return jsyn__fail(j, "invalid \\u escape in a string");
			j->off += 6;
		} else if (strchr("\"\\/bfnrt", j->b[j->off + 1]) && j->b[j->off + 1]) {
			j->off += 2;
		} else {
			return jsyn__fail(j, "invalid escape in a string");
		}
	}
	if (j->off >= j->len) {
		j->off = start;
		return jsyn__fail(j, "unterminated string");
	}
	j->off++;
	return true;
}

static bool jsyn__digits(struct jsyn *j)
{
	size_t s = j->off;

	while (j->off < j->len && isdigit((unsigned char)j->b[j->off]))
		j->off++;
	return j->off > s;
}

static bool jsyn__number(struct jsyn *j)
{
	size_t start = j->off;

	if (j->b[j->off] == '-')
		j->off++;
	if (!jsyn__digits(j))
		goto bad;
	if (j->off < j->len && j->b[j->off] == '.') {
		j->off++;
		if (!jsyn__digits(j))
			goto bad;
	}
	if (j->off < j->len && (j->b[j->off] == 'e' || j->b[j->off] == 'E')) {
		j->off++;
		if (j->off < j->len && (j->b[j->off] == '+' || j->b[j->off] == '-'))
			j->off++;
		if (!jsyn__digits(j))
			goto bad;
	}
	return true;
bad:
	j->off = start;
	return jsyn__fail(j, "invalid number");
}

static bool jsyn__value(struct jsyn *j);

static bool jsyn__container(struct jsyn *j, char close)
{
	bool obj = close == '}';

	if (++j->depth > CJSON_NESTING_LIMIT)
		return jsyn__fail(j, "nested too deeply");
	j->off++;
	jsyn__ws(j);
	if (j->off < j->len && j->b[j->off] == close) {
		j->off++;
		j->depth--;
		return true;
	}
	for (;;) {
		jsyn__ws(j);
		if (obj) {
			if (j->off >= j->len)
				return jsyn__fail(j, "unexpected end of input");
			if (j->b[j->off] == '}')
				return jsyn__fail(j, "expected a \"key\" (JSON has no trailing commas)");
			if (j->b[j->off] != '"')
				return jsyn__fail(j, "expected a \"key\" in double quotes");
			if (!jsyn__string(j))
				return false;
			jsyn__ws(j);
			if (j->off >= j->len || j->b[j->off] != ':')
				return jsyn__fail(j, "expected ':' after the key");
			j->off++;
		} else {
			jsyn__ws(j);
			if (j->off < j->len && j->b[j->off] == ']')
				return jsyn__fail(j, "expected a value (JSON has no trailing commas)");
		}
		if (!jsyn__value(j))
			return false;
		jsyn__ws(j);
		if (j->off >= j->len)
			return jsyn__fail(j, "unexpected end of input");
		if (j->b[j->off] == close)
			break;
		if (j->b[j->off] != ',')
			return jsyn__fail(j, obj ? "expected ',' or '}'" : "expected ',' or ']'");
		j->off++;
	}
	j->off++;
	j->depth--;
	return true;
}

static bool jsyn__value(struct jsyn *j)
{
	static const char *const lits[] = { "true", "false", "null" };
	char c;

	jsyn__ws(j);
	if (j->off >= j->len)
		return jsyn__fail(j, "unexpected end of input");
	c = j->b[j->off];
	if (c == '{')
		return jsyn__container(j, '}');
	if (c == '[')
		return jsyn__container(j, ']');
	if (c == '"')
		return jsyn__string(j);
	if (c == '-' || isdigit((unsigned char)c))
		return jsyn__number(j);
	for (size_t i = 0; i < 3; i++) {
		size_t l = strlen(lits[i]);

		if (j->len - j->off >= l && !memcmp(j->b + j->off, lits[i], l)) {
			j->off += l;
			return true;
		}
	}
	return jsyn__fail(j, "expected a value (strings need double quotes)");
}

static void json__load(struct pctx *p, const char *buf, size_t len)
{
	struct jscan s = { .buf = buf, .len = len, .line = 1, .col = 1 };
	struct jsyn j = { .b = buf, .len = len };
	const char *end = NULL;
	struct node *tree;
	int line, col;
	cJSON *root;

	if (jsyn__value(&j)) {
		jsyn__ws(&j);
		if (j.off < len)
			jsyn__fail(&j, "more content after the document (wrap several policies "
				   "in a [ ] list)");
	}
	if (j.msg) {
		pos_of(buf, len, j.off, &line, &col);
		pdiag_at(p, line, col, "JSON syntax error: %s", j.msg);
		return;
	}
	root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
	if (!root) {
		/* Only what the check above lets through: memory. */
		p->oom = true;
		return;
	}
	tree = json__build(p, root, &s);
	cJSON_Delete(root);
	if (!tree) {
		p->oom = true;
		return;
	}
	root__check(p, tree);
}

/* ------------------------------------------------------------------ */
/* Files                                                                */

static void doc_key(const struct pol_doc *d, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s/%s", d->kind == POL_CLUSTER ? "ClusterAgentPolicy" :
		 "AgentPolicy", d->namespace ? d->namespace : "", d->name);
}

static void dup_doc_report(struct pctx *p, const struct dupent *dup, const struct dupent *first,
			   const void *arg)
{
	const struct filedoc *fd = &p->docs[dup->idx], *f0 = &p->docs[first->idx];
	char id[320];

	policy__doc_id(&fd->d, id, sizeof(id));
	pdiag_at(p, fd->name_line, fd->name_col, "duplicate %s \"%s\" in this file (first at "
		 "line %d)", fd->d.kind == POL_CLUSTER ? "ClusterAgentPolicy" : "AgentPolicy",
		 id, f0->name_line);
}

/* (kind, namespace, name) names one object, in a file as in a cluster. */
static void docs__check_unique(struct pctx *p)
{
	struct dupent *e = p_calloc(p, p->ndocs, sizeof(*e));
	char (*keys)[600] = p_calloc(p, p->ndocs, sizeof(*keys));
	size_t ne = 0;

	if (!e || !keys)
		goto out;
	for (size_t i = 0; i < p->ndocs; i++) {
		const struct pol_doc *d = &p->docs[i].d;
		char id[320], k[600];

		if (!d->name)
			continue;
		doc_key(d, keys[i], sizeof(keys[i]));
		e[ne++] = (struct dupent){ .s = keys[i], .idx = i };
		for (size_t j = 0; p->set && j < p->set->ndocs; j++) {
			const struct pol_doc *o = &p->set->docs[j];

			if (!o->name)
				continue;
			doc_key(o, k, sizeof(k));
			if (strcmp(k, keys[i]))
				continue;
			policy__doc_id(d, id, sizeof(id));
			pdiag_at(p, p->docs[i].name_line, p->docs[i].name_col,
				 "%s \"%s\" is already defined in %s:%d",
				 d->kind == POL_CLUSTER ? "ClusterAgentPolicy" : "AgentPolicy", id,
				 o->file ? o->file : "?", o->line);
			break;
		}
	}
	dups__find(p, e, ne, dup_doc_report, NULL);
out:
	free(e);
	free(keys);
}

struct diagsort {
	struct pol_diag d;
	size_t idx;
};

static int diagsort__cmp(const void *a, const void *b)
{
	const struct diagsort *x = a, *y = b;

	if (x->d.line != y->d.line)
		return x->d.line < y->d.line ? -1 : 1;
	if (x->d.col != y->d.col)
		return x->d.col < y->d.col ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Checks run per concern, not in file order; people read top to bottom. */
static void diags__sort(struct pol_diags *d, size_t from)
{
	size_t n = d->n - from;
	struct diagsort *t;

	if (n < 2 || !(t = calloc(n, sizeof(*t))))
		return;
	for (size_t i = 0; i < n; i++)
		t[i] = (struct diagsort){ .d = d->v[from + i], .idx = i };
	qsort(t, n, sizeof(*t), diagsort__cmp);
	for (size_t i = 0; i < n; i++)
		d->v[from + i] = t[i].d;
	free(t);
}

int policy__parse_buf(const char *name, const char *buf, size_t len,
		      struct pol_set *set, struct pol_diags *diags)
{
	struct pctx p = {
		.file = name, .diags = diags, .set = set, .alias_budget = ALIAS_BUDGET,
	};
	size_t from = diags->n, i = 0;
	int err = 0;

	/* A UTF-8 byte order mark is not content. */
	if (len >= 3 && !memcmp(buf, "\xef\xbb\xbf", 3)) {
		buf += 3;
		len -= 3;
	}
	p.buf = buf;
	p.len = len;
	while (i < len && isspace((unsigned char)buf[i]))
		i++;
	if (i < len && (buf[i] == '{' || buf[i] == '['))
		json__load(&p, buf, len);
	else
		yaml__load(&p, buf, len);
	if (!p.nerr && !p.oom)
		docs__check_unique(&p);
	diags__sort(diags, from);

	if (p.oom)
		err = -ENOMEM;
	else if (p.nerr)
		err = -EINVAL;
	if (!err && p.ndocs) {
		struct pol_doc *v = realloc(set->docs, (set->ndocs + p.ndocs) * sizeof(*v));

		if (!v) {
			err = -ENOMEM;
		} else {
			set->docs = v;
			for (size_t k = 0; k < p.ndocs; k++)
				set->docs[set->ndocs++] = p.docs[k].d;
			p.ndocs = 0;
		}
	}
	if (err == -ENOMEM && diags->n == from)
		diags__add(diags, name, 0, 0, strdup("out of memory"));
	for (size_t k = 0; k < p.ndocs; k++)
		doc__free(&p.docs[k].d);
	free(p.docs);
	arena__reset(&p, true);
	return err;
}

static int file__read(const char *path, char **out, size_t *outlen)
{
	size_t len = 0, cap = 0;
	char *buf = NULL;
	int fd, err = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (;;) {
		ssize_t r;

		if (len == cap) {
			char *nb;

			if (cap >= MAX_FILE_SIZE) {
				err = -EFBIG;
				break;
			}
			cap = cap ? cap * 2 : 65536;
			if (!(nb = realloc(buf, cap))) {
				err = -ENOMEM;
				break;
			}
			buf = nb;
		}
		r = read(fd, buf + len, cap - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err = -errno;
			break;
		}
		if (!r)
			break;
		len += (size_t)r;
	}
	close(fd);
	if (err) {
		free(buf);
		return err;
	}
	*out = buf;
	*outlen = len;
	return 0;
}

int policy__parse_file(const char *path, struct pol_set *set, struct pol_diags *diags)
{
	char *buf = NULL, *msg = NULL;
	size_t len = 0;
	int err;

	err = file__read(path, &buf, &len);
	if (err) {
		int r;

		if (err == -EFBIG)
			r = asprintf(&msg, "cannot read: larger than %lu MiB", MAX_FILE_SIZE >> 20);
		else
			r = asprintf(&msg, "cannot read: %s", strerror(-err));
		if (r < 0 || diags__add(diags, path, 0, 0, msg))
			return -ENOMEM;
		return err;
	}
	err = policy__parse_buf(path, buf ? buf : "", len, set, diags);
	free(buf);
	return err;
}

void policy__print_diags(const struct pol_diags *diags, FILE *f)
{
	for (size_t i = 0; i < diags->n; i++) {
		const struct pol_diag *d = &diags->v[i];

		if (d->line > 0)
			fprintf(f, "%s:%d:%d: %s\n", d->file, d->line, d->col, d->msg);
		else
			fprintf(f, "%s: %s\n", d->file, d->msg);
	}
}

void policy__diags_free(struct pol_diags *diags)
{
	for (size_t i = 0; i < diags->n; i++) {
		free(diags->v[i].file);
		free(diags->v[i].msg);
	}
	free(diags->v);
	diags->v = NULL;
	diags->n = 0;
}

void policy__set_free(struct pol_set *set)
{
	for (size_t i = 0; i < set->ndocs; i++)
		doc__free(&set->docs[i]);
	free(set->docs);
	set->docs = NULL;
	set->ndocs = 0;
}

const char *policy__doc_id(const struct pol_doc *doc, char *buf, size_t len)
{
	if (doc->namespace)
		snprintf(buf, len, "%s/%s", doc->namespace, doc->name ? doc->name : "");
	else
		snprintf(buf, len, "%s", doc->name ? doc->name : "");
	return buf;
}

static const char *const class_names[SL_CLASS_MAX] = {
	[SL_CLASS_NONE] = "none",
	[SL_CLASS_LLM] = "llm",
	[SL_CLASS_TOOL] = "tool",
	[SL_CLASS_AGENT] = "agent",
	[SL_CLASS_GATEWAY] = "gateway",
	[SL_CLASS_DNS] = "dns",
	[SL_CLASS_OTHER] = "other",
};

const char *policy__class_name(uint8_t class)
{
	return class < SL_CLASS_MAX ? class_names[class] : "none";
}

int policy__class_parse(const char *s)
{
	/* "none" is what a verdict says when no rule decided; a rule
	 * cannot claim it. */
	for (int c = SL_CLASS_NONE + 1; c < SL_CLASS_MAX; c++)
		if (!strcmp(s, class_names[c]))
			return c;
	return -EINVAL;
}
