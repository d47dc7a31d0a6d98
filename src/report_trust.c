/*
 * report_trust.c: whose records count.  Any local user can send journald
 * an entry with fdistd's MESSAGE_IDs and FDIST_* fields; what a client
 * cannot send are the fields journald adds itself, those beginning with
 * "_" (it drops them from what a client sends).  So a record counts only
 * if journald stamped it as root's (_UID=0: fdistd run by hand, or as
 * root by a unit) or as that of a process of fdistd's unit
 * (_SYSTEMD_UNIT, whatever uid DynamicUser= or User= gives it), or of a
 * unit --unit names.  In files from systemd-journal-remote these fields
 * are those the source machine's journald set.
 */
#include <sys/types.h>

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"

static int	report_trust_pattern(const char *);

/* Whether a unit is a pattern, as journalctl -u takes them. */
static int
report_trust_pattern(const char *unit)
{
	return (strpbrk(unit, "*?[") != NULL);
}

/* Trust the unit (a name or a pattern); ".service" if it has no suffix. */
int
report_trust_add_unit(struct report *r, const char *name)
{
	const char	 *suffix = strchr(name, '.') == NULL ? ".service" : "";
	char		**nu, *u;

	if (*name == '\0' || strlen(name) + strlen(suffix) > REPORT_UNIT_MAX) {
		report_warnx("--unit: expected a unit name of at most %d "
		    "characters", REPORT_UNIT_MAX);
		return (-1);
	}
	if (asprintf(&u, "%s%s", name, suffix) == -1) {
		report_warn("out of memory");
		return (-1);
	}
	if ((nu = reallocarray(r->r_units, r->r_nunits + 1,
	    sizeof(*nu))) == NULL) {
		free(u);
		report_warn("out of memory");
		return (-1);
	}
	r->r_units = nu;
	nu[r->r_nunits++] = u;
	if (report_trust_pattern(u))
		r->r_unit_patterns = 1;
	return (0);
}

void
report_trust_free(struct report *r)
{
	size_t	i;

	for (i = 0; i < r->r_nunits; i++)
		free(r->r_units[i]);
	free(r->r_units);
	r->r_units = NULL;
	r->r_nunits = 0;
}

/*
 * And the entry's writer: root, or a trusted unit.  A pattern is no
 * match sd-journal can take: then report_trust_entry() alone decides.
 */
int
report_trust_match(struct report *r)
{
	char	m[REPORT_UNIT_MAX + 16];
	size_t	i;

	if (r->r_unit_patterns)
		return (0);
	if (sd_journal_add_conjunction(r->r_j) < 0 ||
	    sd_journal_add_match(r->r_j, "_UID=0", 0) < 0 ||
	    sd_journal_add_disjunction(r->r_j) < 0)
		return (-1);
	for (i = 0; i < r->r_nunits; i++) {
		snprintf(m, sizeof(m), "_SYSTEMD_UNIT=%s", r->r_units[i]);
		if (sd_journal_add_match(r->r_j, m, 0) < 0)
			return (-1);
	}
	return (0);
}

/* Whether fdistd wrote the entry, by the fields journald set. */
int
report_trust_entry(const struct report *r, const struct report_entry *e)
{
	size_t	i;

	if (strcmp(e->re_uid, "0") == 0)
		return (1);
	if (e->re_unit[0] == '\0')
		return (0);
	for (i = 0; i < r->r_nunits; i++)
		if (report_trust_pattern(r->r_units[i]) ?
		    fnmatch(r->r_units[i], e->re_unit, FNM_NOESCAPE) == 0 :
		    strcmp(r->r_units[i], e->re_unit) == 0)
			return (1);
	return (0);
}

/* The writers that count, for a message: "unit U" or "units U, V". */
void
report_trust_describe(const struct report *r, char *buf, size_t size)
{
	size_t	i, n;

	n = (size_t)snprintf(buf, size, "unit%s", r->r_nunits > 1 ? "s" : "");
	for (i = 0; i < r->r_nunits && n < size; i++)
		n += (size_t)snprintf(buf + n, size - n, "%s %s",
		    i > 0 ? "," : "", r->r_units[i]);
}
