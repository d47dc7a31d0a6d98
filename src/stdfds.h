/*
 * stdfds.h: keep the standard descriptors taken, for fdistd and
 * fdist-fetch alike.
 */
#ifndef STDFDS_H
#define STDFDS_H

int	stdfds_hold(void);

#endif
