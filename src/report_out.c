/*
 * report_out.c: what fdist-report prints: the summary line, the table,
 * the JSON document, and while waiting the progress line or one line
 * per change of state.
 */
#include <sys/types.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "report.h"

#define REPORT_COLS		8

static int	report_out_cmp(const void *, const void *);
static const char *report_out_digest(const struct report *);
static const char *report_out_digest_name(const struct report *);
static void	report_out_detail(const struct report *,
		    const struct report_host *, char *, size_t);
static void	report_out_str(FILE *, const char *);
static void	report_out_sorted(struct report *);
static size_t	report_out_width(const char *);
static void	report_out_row(FILE *, const char *const *, const size_t *,
		    int);

/* How many hosts are in each state (after report_eval). */
void
report_out_counts(const struct report *r, size_t *counts)
{
	size_t	i;

	memset(counts, 0, RS_COUNT * sizeof(*counts));
	for (i = 0; i < r->r_nhosts; i++)
		counts[r->r_hosts[i]->rh_state]++;
}

/* A realtime timestamp: local for people, UTC (ISO 8601) for JSON. */
void
report_out_time(uint64_t usec, char *buf, size_t len, int iso)
{
	struct tm	tm;
	time_t		t = (time_t)(usec / 1000000);

	if (usec == 0) {
		snprintf(buf, len, "-");
		return;
	}
	if (iso) {
		gmtime_r(&t, &tm);
		strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
	} else {
		localtime_r(&t, &tm);
		strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
	}
}

/* What the summary says of the version's digest while it has none. */
static const char *
report_out_digest(const struct report *r)
{
	switch (r->r_digest) {
	case RD_PENDING:
		return ("pending");
	case RD_FAILED:
		return ("failed");
	default:
		return ("(not known yet)");
	}
}

/*
 * "share debian-12 sha256 3972dc91…: 397/400 done, 1 failed, 2 missing",
 * or "sha256 pending" while the daemon is hashing the version it serves.
 */
void
report_out_summary(FILE *fp, const struct report *r, const size_t *counts)
{
	static const enum report_state order[] = { RS_UNVERIFIED, RS_OLD,
	    RS_FAILED, RS_MISSING };
	size_t	i;

	if (r->r_sha[0] != '\0')
		fprintf(fp, "share %s sha256 %.8s\u2026: %zu/%zu done",
		    r->r_share, r->r_sha, counts[RS_DONE], r->r_nhosts);
	else
		fprintf(fp, "share %s sha256 %s: %zu/%zu done", r->r_share,
		    report_out_digest(r), counts[RS_DONE], r->r_nhosts);
	for (i = 0; i < sizeof(order) / sizeof(order[0]); i++)
		if (counts[order[i]] > 0)
			fprintf(fp, ", %zu %s", counts[order[i]],
			    report_state_name(order[i]));
	fputc('\n', fp);
}

/* The JSON summary's "digest": where the version's digest comes from. */
static const char *
report_out_digest_name(const struct report *r)
{
	static const char *const names[] = { [RD_NONE] = NULL,
	    [RD_GIVEN] = "given", [RD_KNOWN] = "known",
	    [RD_PENDING] = "pending", [RD_FAILED] = "failed" };

	return (r->r_digest <= RD_FAILED ? names[r->r_digest] : NULL);
}

/* Missing and failed first, then by the hosts file's order or name. */
static int
report_out_cmp(const void *a, const void *b)
{
	const struct report_host	*x = *(struct report_host *const *)a;
	const struct report_host	*y = *(struct report_host *const *)b;

	if (x->rh_state != y->rh_state)
		return (x->rh_state < y->rh_state ? -1 : 1);
	if (x->rh_line != y->rh_line)
		return (x->rh_line < y->rh_line ? -1 : 1);
	return (strcmp(x->rh_name, y->rh_name));
}

static void
report_out_sorted(struct report *r)
{
	qsort(r->r_hosts, r->r_nhosts, sizeof(*r->r_hosts), report_out_cmp);
}

/* The last column: why a host is in its state. */
static void
report_out_detail(const struct report *r, const struct report_host *h,
    char *buf, size_t len)
{
	const char	*why;
	char		 t[32];

	report_out_time(h->rh_ftime, t, sizeof(t), 0);
	switch (h->rh_state) {
	case RS_MISSING:
		snprintf(buf, len, "no record");
		break;
	case RS_FAILED:
		snprintf(buf, len, "%s", h->rh_fstatus);
		break;
	case RS_OLD:
		if (h->rh_has[0] != '\0')
			snprintf(buf, len, "has sha256 %.12s", h->rh_has);
		else
			snprintf(buf, len, "has a version of unknown digest");
		break;
	case RS_UNVERIFIED:
	case RS_DONE:
		why = h->rh_verified ? "" : r->r_sha[0] == '\0' ?
		    (r->r_digest == RD_FAILED ? "sha256 failed" :
		    "sha256 pending") : "no digest claimed";
		if (h->rh_ftime > h->rh_when)
			snprintf(buf, len, "%s%slater %s at %s (%s)", why,
			    why[0] != '\0' ? "; " : "", h->rh_fstatus, t,
			    report_fold_server_name(r, h->rh_fserver));
		else
			snprintf(buf, len, "%s", why);
		break;
	default:
		buf[0] = '\0';
	}
}

/* The summary, then one aligned row per host (those --only keeps). */
void
report_out_table(FILE *fp, struct report *r)
{
	static const char *const head[REPORT_COLS] = { "STATE", "HOST",
	    "LABEL", "SERVER", "WHEN", "TRIES", "BYTES", "DETAIL" };
	struct report_host	*h;
	size_t			 counts[RS_COUNT], w[REPORT_COLS], i, c, n;
	char			 cell[REPORT_COLS][512];
	const char		*cells[REPORT_COLS];
	int			 labels = 0, pass;

	report_out_counts(r, counts);
	report_out_summary(fp, r, counts);
	report_out_sorted(r);
	for (i = 0; i < r->r_nhosts; i++)
		if (r->r_hosts[i]->rh_label != NULL)
			labels = 1;
	for (c = 0; c < REPORT_COLS; c++)
		w[c] = report_out_width(head[c]);
	/* Two passes: measure the columns, then print. */
	for (pass = 0; pass < 2; pass++) {
		if (pass == 1)
			report_out_row(fp, head, w, labels);
		for (i = 0; i < r->r_nhosts; i++) {
			h = r->r_hosts[i];
			if (r->r_only != 0 && !(r->r_only & (1U << h->rh_state)))
				continue;
			snprintf(cell[0], sizeof(cell[0]), "%s",
			    report_state_name(h->rh_state));
			snprintf(cell[1], sizeof(cell[1]), "%s", h->rh_name);
			snprintf(cell[2], sizeof(cell[2]), "%s",
			    h->rh_label != NULL ? h->rh_label : "");
			snprintf(cell[3], sizeof(cell[3]), "%s",
			    report_fold_server_name(r, h->rh_server));
			report_out_time(h->rh_when, cell[4], sizeof(cell[4]),
			    0);
			snprintf(cell[5], sizeof(cell[5]), "%ju",
			    (uintmax_t)h->rh_attempts);
			if (h->rh_state == RS_FAILED)
				snprintf(cell[6], sizeof(cell[6]), "%ju/%ju",
				    (uintmax_t)h->rh_fbytes,
				    (uintmax_t)h->rh_fsize);
			else
				snprintf(cell[6], sizeof(cell[6]), "-");
			report_out_detail(r, h, cell[7], sizeof(cell[7]));
			if (pass == 1) {
				for (c = 0; c < REPORT_COLS; c++)
					cells[c] = cell[c];
				report_out_row(fp, cells, w, labels);
				continue;
			}
			for (c = 0; c < REPORT_COLS; c++)
				if ((n = report_out_width(cell[c])) > w[c])
					w[c] = n;
		}
	}
}

/*
 * The columns a cell takes on a terminal: its UTF-8 characters (labels
 * may have some), not its bytes.
 */
static size_t
report_out_width(const char *s)
{
	size_t	n = 0;

	for (; *s != '\0'; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			n++;
	return (n);
}

/* One row, padded to the widths, without trailing blanks. */
static void
report_out_row(FILE *fp, const char *const *cell, const size_t *w,
    int labels)
{
	char	line[REPORT_COLS * 520];
	size_t	c, o = 0, pad;
	int	n;

	for (c = 0; c < REPORT_COLS; c++) {
		if (c == 2 && !labels)
			continue;
		pad = w[c] + 2 - report_out_width(cell[c]);
		n = snprintf(line + o, sizeof(line) - o, "%s%*s", cell[c],
		    (int)pad, "");
		if (n < 0 || (size_t)n >= sizeof(line) - o)
			break;
		o += (size_t)n;
	}
	while (o > 0 && line[o - 1] == ' ')
		o--;
	line[o] = '\0';
	fprintf(fp, "%s\n", line);
}

/*
 * A JSON string.  Journal fields are bytes: quotes, backslashes and
 * control bytes are escaped, valid UTF-8 passes, any other byte becomes
 * U+FFFD so the document stays valid.
 */
static void
report_out_str(FILE *fp, const char *s)
{
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 n, k;

	if (s == NULL) {
		fputs("null", fp);
		return;
	}
	fputc('"', fp);
	while (*p != '\0') {
		if (*p == '"' || *p == '\\') {
			fprintf(fp, "\\%c", *p++);
			continue;
		}
		if (*p < 0x20 || *p == 0x7f) {
			fprintf(fp, "\\u%04x", *p++);
			continue;
		}
		if (*p < 0x80) {
			fputc(*p++, fp);
			continue;
		}
		n = (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3 :
		    (*p & 0xf8) == 0xf0 ? 4 : 0;
		for (k = 1; k < n; k++)
			if ((p[k] & 0xc0) != 0x80)
				break;
		if (n == 0 || k < n || (n == 2 && *p < 0xc2) ||
		    (n == 3 && *p == 0xe0 && p[1] < 0xa0) ||
		    (n == 3 && *p == 0xed && p[1] >= 0xa0) ||
		    (n == 4 && ((*p == 0xf0 && p[1] < 0x90) ||
		    (*p == 0xf4 && p[1] >= 0x90) || *p > 0xf4))) {
			fputs("\\ufffd", fp);
			p++;
			continue;
		}
		fwrite(p, 1, n, fp);
		p += n;
	}
	fputc('"', fp);
}

/* One document: {"summary": {...}, "hosts": [{...}, ...]} (see the man page). */
void
report_out_json(FILE *fp, struct report *r)
{
	struct report_host	*h;
	size_t			 counts[RS_COUNT], i, left;
	char			 t[32];
	int			 first = 1, s;

	report_out_counts(r, counts);
	report_out_sorted(r);
	left = r->r_nhosts - counts[RS_DONE];
	fputs("{\"summary\":{\"share\":", fp);
	report_out_str(fp, r->r_share);
	fputs(",\"sha256\":", fp);
	report_out_str(fp, r->r_sha[0] != '\0' ? r->r_sha : NULL);
	fputs(",\"digest\":", fp);
	report_out_str(fp, report_out_digest_name(r));
	fputs(",\"version\":", fp);
	report_out_str(fp, r->r_version >= 0 && (size_t)r->r_version <
	    r->r_nversions ? r->r_versions[r->r_version].rv_token : NULL);
	fprintf(fp, ",\"total\":%zu", r->r_nhosts);
	for (s = RS_COUNT - 1; s >= 0; s--)
		fprintf(fp, ",\"%s\":%zu", report_state_name(s), counts[s]);
	fprintf(fp, ",\"complete\":%s,\"expected_hosts\":%s,"
	    "\"accept_unverified\":%s,\"match\":\"%s\",\"records\":%ju,"
	    "\"unlisted_records\":%ju,\"servers\":[",
	    report_complete(r, left) ? "true" : "false",
	    r->r_hosts_path != NULL ? "true" : "false",
	    r->r_accept_unverified ? "true" : "false",
	    r->r_match == MATCH_HOST_ID ? "host-id" : "address",
	    (uintmax_t)r->r_records, (uintmax_t)r->r_unlisted);
	for (i = 0; i < r->r_nservers; i++) {
		fputs(i > 0 ? "," : "", fp);
		report_out_str(fp, r->r_servers[i].rs_display);
	}
	fputs("]},\n\"hosts\":[", fp);
	for (i = 0; i < r->r_nhosts; i++) {
		h = r->r_hosts[i];
		if (r->r_only != 0 && !(r->r_only & (1U << h->rh_state)))
			continue;
		fputs(first ? "\n{\"host\":" : ",\n{\"host\":", fp);
		first = 0;
		report_out_str(fp, h->rh_name);
		fputs(",\"label\":", fp);
		report_out_str(fp, h->rh_label);
		fprintf(fp, ",\"state\":\"%s\",\"verified\":%s,\"server\":",
		    report_state_name(h->rh_state),
		    h->rh_verified ? "true" : "false");
		report_out_str(fp, h->rh_server == REPORT_NOSERVER ? NULL :
		    report_fold_server_name(r, h->rh_server));
		report_out_time(h->rh_when, t, sizeof(t), 1);
		fputs(",\"time\":", fp);
		report_out_str(fp, h->rh_when ? t : NULL);
		fprintf(fp, ",\"time_usec\":%ju,\"attempts\":%ju,"
		    "\"failures\":%ju,\"has_sha256\":",
		    (uintmax_t)h->rh_when, (uintmax_t)h->rh_attempts,
		    (uintmax_t)h->rh_failures);
		report_out_str(fp, h->rh_state == RS_OLD && h->rh_has[0] != '\0'
		    ? h->rh_has : NULL);
		fputs(",\"ack\":", fp);
		report_out_str(fp, h->rh_ack);
		fputs(",\"last_failure\":", fp);
		if (h->rh_failures == 0) {
			fputs("null}", fp);
			continue;
		}
		fputs("{\"status\":", fp);
		report_out_str(fp, h->rh_fstatus);
		report_out_time(h->rh_ftime, t, sizeof(t), 1);
		fputs(",\"time\":", fp);
		report_out_str(fp, t);
		fprintf(fp, ",\"time_usec\":%ju,\"bytes\":%ju,\"size\":%ju,"
		    "\"server\":", (uintmax_t)h->rh_ftime,
		    (uintmax_t)h->rh_fbytes, (uintmax_t)h->rh_fsize);
		report_out_str(fp, h->rh_fserver == REPORT_NOSERVER ? NULL :
		    report_fold_server_name(r, h->rh_fserver));
		fputs("}}", fp);
	}
	fputs("\n]}\n", fp);
}

/* The live line on a terminal: done/total, failed, rate, time left. */
void
report_out_progress(struct report *r, const size_t *counts, double secs)
{
	static size_t	done0 = SIZE_MAX;
	double		rate, eta;
	size_t		left = r->r_nhosts - counts[RS_DONE];

	if (done0 == SIZE_MAX)
		done0 = counts[RS_DONE];
	rate = secs > 0 ? (double)(counts[RS_DONE] - done0) * 60.0 / secs : 0;
	fprintf(stderr, "\r%zu/%zu done, %zu failed, %zu missing, "
	    "%.1f hosts/min", counts[RS_DONE], r->r_nhosts, counts[RS_FAILED],
	    counts[RS_MISSING], rate);
	if (rate > 0 && left > 0) {
		eta = (double)left / rate * 60.0;
		fprintf(stderr, ", about %ldm%02lds left", (long)(eta / 60),
		    (long)eta % 60);
	}
	if (r->r_sha[0] == '\0')
		fprintf(stderr, ", sha256 %s", report_out_digest(r));
	fputs("\033[K", stderr);
	fflush(stderr);
	report_line_open = 1;
}

/* Without a terminal: one line per change of a host's state. */
void
report_out_change(struct report *r, struct report_host *h)
{
	char	t[32], detail[512];

	report_out_time(h->rh_when, t, sizeof(t), 0);
	report_out_detail(r, h, detail, sizeof(detail));
	fprintf(stderr, "%s %s %s %s%s%s\n", t, h->rh_name,
	    report_state_name(h->rh_state),
	    report_fold_server_name(r, h->rh_server),
	    detail[0] != '\0' ? " " : "", detail);
	fflush(stderr);
}
