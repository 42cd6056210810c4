// The init for a new pid namespace, aarch64 (Linux): a whole static ELF,
// header included, so `as` + `objcopy -O binary -j .text` gives the file
// itself. Its bytes live in init.py; tests re-assemble this file and compare.
// Same arguments and behaviour as init_x86_64.S (see there).
        .text
        .set    BASE, 0x400000
ehdr:
        .byte   0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0   // ELF, 64-bit, LSB, v1, SysV
        .zero   8
        .short  2                       // ET_EXEC
        .short  183                     // EM_AARCH64
        .long   1
        .quad   BASE + _start - ehdr    // e_entry
        .quad   phdr - ehdr             // e_phoff
        .quad   0                       // e_shoff
        .long   0                       // e_flags
        .short  64, 56, 2               // e_ehsize, e_phentsize, e_phnum
        .short  0, 0, 0                 // no section headers
phdr:
        .long   1, 5                    // PT_LOAD, R+X
        .quad   0, BASE, BASE           // offset, vaddr, paddr
        .quad   end - ehdr, end - ehdr  // filesz, memsz
        .quad   0x10000
        .long   0x6474e551, 6           // PT_GNU_STACK, R+W (not executable)
        .quad   0, 0, 0, 0, 0, 16

// x19 argc, then the program's pid; x20 argv; x21 envp; x22 report fd;
// x23 status fd.
// Frame (sp): +0 every signal, +8 the mask to restore for the program,
// +16 failure record (code, errno), +24 wait status.
_start:
        ldr     x19, [sp]
        add     x20, sp, #8
        add     x21, x20, x19, lsl #3
        add     x21, x21, #8
        sub     sp, sp, #32
        mov     x0, #-1
        str     x0, [sp]
        mov     x22, #-1
        mov     x23, #-1
        cmp     x19, #5
        b.lo    .Lbad
        ldr     x0, [x20, #8]
        bl      number
        mov     x22, x0
        ldr     x0, [x20, #16]
        bl      number
        str     w0, [sp, #16]
        ldr     x0, [x20, #24]
        bl      number
        mov     x23, x0
        // Block everything: signals wait in the queue for sigtimedwait.
        mov     x0, #0                  // rt_sigprocmask(SIG_BLOCK, all, old)
        mov     x1, sp
        add     x2, sp, #8
        mov     x3, #8
        mov     x8, #135
        svc     #0
        mov     x0, #0x4111             // clone(CLONE_VM|CLONE_VFORK|SIGCHLD, 0)
        mov     x1, #0
        mov     x2, #0
        mov     x3, #0
        mov     x4, #0
        mov     x8, #220
        svc     #0
        cbz     x0, .Lchild
        tbnz    x0, #63, .Lfail         // no child: report like a failed exec
        mov     x19, x0                 // the program's pid
        mov     x0, #0                  // close_range(0, 2, 0): the standard
        mov     x1, #2                  // streams are the program's alone (a
        mov     x2, #0                  // reader sees EOF when it closes them)
        mov     x8, #436
        svc     #0
        tbnz    x22, #63, .Lwait
        mov     x0, x22                 // close(report fd): the child's copy
        mov     x8, #57                 // tells the parent (EOF at its exec)
        svc     #0
.Lwait:
        mov     x0, sp                  // rt_sigtimedwait(all, NULL, NULL)
        mov     x1, #0
        mov     x2, #0
        mov     x3, #8
        mov     x8, #137
        svc     #0
        tbnz    x0, #63, .Lwait
        cmp     x0, #17                 // SIGCHLD
        b.eq    .Lreap
        mov     x1, x0                  // kill(program, sig)
        mov     x0, x19
        mov     x8, #129
        svc     #0
        b       .Lwait
.Lreap:
        mov     x0, #-1                 // wait4(-1, &status, WNOHANG, NULL)
        add     x1, sp, #24
        mov     x2, #1
        mov     x3, #0
        mov     x8, #260
        svc     #0
        cmp     x0, #0
        b.le    .Lwait                  // none left that exited (or no child)
        cmp     x0, x19
        b.ne    .Lreap                  // an orphan: reaped, look for more
        tbnz    x23, #63, .Lcode
        mov     x0, x23                 // write(status fd, &status, 4)
        add     x1, sp, #24
        mov     x2, #4
        mov     x8, #64
        svc     #0
.Lcode:
        ldr     w1, [sp, #24]
        ands    w0, w1, #0x7f
        b.eq    .Lexited
        add     w0, w0, #128            // killed by signal N: 128+N
        b       .Lexit
.Lexited:
        ubfx    w0, w1, #8, #8          // the exit code
.Lexit:
        mov     x8, #94                 // exit_group
        svc     #0
        udf     #0

// The program's side: the report fd closes at exec, the status fd now
// (the program never sees it), the mask is the one the plan set, then
// exec; on failure write (code, errno) and exit 127.
.Lchild:
        tbnz    x22, #63, .Lstatus
        mov     x0, x22                 // fcntl(report fd, F_SETFD, FD_CLOEXEC)
        mov     x1, #2
        mov     x2, #1
        mov     x8, #25
        svc     #0
.Lstatus:
        tbnz    x23, #63, .Lmask
        mov     x0, x23                 // close(status fd): the init's own copy stays
        mov     x8, #57
        svc     #0
.Lmask:
        mov     x0, #2                  // rt_sigprocmask(SIG_SETMASK, old)
        add     x1, sp, #8
        mov     x2, #0
        mov     x3, #8
        mov     x8, #135
        svc     #0
        ldr     x0, [x20, #32]          // execve(path, argv + 5, envp)
        add     x1, x20, #40
        mov     x2, x21
        mov     x8, #221
        svc     #0
.Lfail:
        neg     w0, w0
        str     w0, [sp, #20]
        tbnz    x22, #63, .Lbad
        mov     x0, x22                 // write(report fd, record, 8)
        add     x1, sp, #16
        mov     x2, #8
        mov     x8, #64
        svc     #0
.Lbad:
        mov     x0, #127                // exit_group(127)
        mov     x8, #94
        svc     #0
        udf     #0

// x0 = the decimal number at x0, or -1 when it does not start with a digit.
number:
        mov     x1, x0
        mov     x0, #-1
        ldrb    w2, [x1]
        sub     w2, w2, #48
        cmp     w2, #9
        b.hi    .Lnumber_done
        mov     x0, #0
        mov     x3, #10
.Lnumber_digit:
        ldrb    w2, [x1], #1
        sub     w2, w2, #48
        cmp     w2, #9
        b.hi    .Lnumber_done
        madd    x0, x0, x3, x2
        b       .Lnumber_digit
.Lnumber_done:
        ret
        .balign 4
end:
