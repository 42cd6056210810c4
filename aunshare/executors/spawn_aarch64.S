// The native spawn routine for aarch64 (Linux). Assembled bytes live in
// native.py; tests re-assemble this file with GNU as and compare.
//
// long spawn(struct clone_args *ca, size_t ca_size, struct step *steps,
//            long nsteps, long errfd, struct header *hdr)
//
// The contract is spawn_x86_64.S's (header, step layout, flags, exit
// codes), including ca_size == 0: call clone(2) instead of clone3, with
// flags|exit signal from ca+0, the stack top from ca+40 and the pidfd
// address from ca+8 (the other two arguments are 0, so clone's argument
// order, which differs between architectures, does not matter here).
//
// Only caller-saved registers (x0-x17) are used, and no stack at all: svc
// preserves every register but x0, so the parent needs nothing saved, and
// a CLONE_VM|CLONE_VFORK child (which runs on the parent's stack) writes
// nothing the parent will read after it resumes.
        .text
        .globl  aunshare_spawn
        .type   aunshare_spawn, %function
aunshare_spawn:
        mov     x9, x0                  // clone_args
        mov     x10, x1                 // its size; 0: clone(2)
        mov     x11, x2                 // current step
        mov     x12, x3                 // steps left
        mov     x13, x4                 // errfd
        mov     x14, x5                 // header
        // Block every signal so nothing runs between clone and the plan.
        mov     x0, #2                  // SIG_SETMASK
        mov     x1, x14
        add     x2, x14, #8
        mov     x3, #8
        mov     x8, #135                // rt_sigprocmask
        svc     #0
        cbz     x10, .Lclone
        mov     x0, x9
        mov     x1, x10
        mov     x8, #435                // clone3
        svc     #0
        b       .Lcloned
.Lclone:
        ldr     x0, [x9]                // flags | exit signal
        ldr     x1, [x9, #40]           // stack top, or 0
        ldr     x2, [x9, #8]            // CLONE_PIDFD stores the pidfd here
        mov     x3, xzr
        mov     x4, xzr
        mov     x8, #220                // clone
        svc     #0
.Lcloned:
        cbz     x0, .Lchild
        // Parent (or clone failure): restore the caller's mask.
        mov     x15, x0
        mov     x0, #2
        add     x1, x14, #8
        mov     x2, xzr
        mov     x3, #8
        mov     x8, #135
        svc     #0
        mov     x0, x15
        ret
.Lchild:
        mov     x15, xzr                // the previous step's result
.Lloop:
        cbz     x12, .Ldone
        ldr     x8, [x11]
        ldp     x0, x1, [x11, #8]
        ldp     x2, x3, [x11, #24]
        ldp     x4, x5, [x11, #40]
        ldr     x16, [x11, #56]         // flags
        tbz     x16, #0, .Lcall
        mov     x0, x15
.Lcall:
        svc     #0
        tbnz    x16, #1, .Lnext
        cmn     x0, #4095               // carry: x0 in [-4095, -1]
        b.hs    .Lfail
        tbz     x16, #2, .Lnext
        ldr     x17, [x11, #48]
        cmp     x0, x17
        b.eq    .Lnext
        mov     x0, #-3                 // -ESRCH
        b       .Lfail
.Lnext:
        mov     x15, x0
        add     x11, x11, #72
        sub     x12, x12, #1
        b       .Lloop
.Lfail:
        neg     w0, w0
        str     w0, [x14, #20]
        ldr     w0, [x11, #64]
        str     w0, [x14, #16]
        tbnz    x13, #63, .Lexit        // errfd < 0
        mov     x0, x13
        add     x1, x14, #16
        mov     x2, #8
        mov     x8, #64                 // write
        svc     #0
.Lexit:
        mov     x0, #127
        mov     x8, #93                 // exit
        svc     #0
        udf     #0
.Ldone:
        mov     x0, xzr
        mov     x8, #93
        svc     #0
        udf     #0
