/* SPDX-License-Identifier: GPL-2.0 */
/*
 * BOUND(x, mask): `x &= mask` that the verifier sees. Written in asm because clang otherwise folds
 * the mask into an earlier range check the verifier cannot follow; every variable offset into a
 * scratch buffer goes through it right before its use.
 */
#ifndef TETRAGON_BOUND_H
#define TETRAGON_BOUND_H

/* two levels so that a macro mask is expanded before it is pasted into the asm */
#define BOUND_(x, mask) asm volatile("%0 &= " #mask : "+r"(x))
#define BOUND(x, mask) BOUND_(x, mask)

#endif
