# The native spawn routine for x86_64 (Linux). Assembled bytes live in
# native.py; tests re-assemble this file with GNU as and compare.
#
# long spawn(struct clone_args *ca, size_t ca_size, struct step *steps,
#            long nsteps, long errfd, struct header *hdr)
#
# header:  +0  sigset: mask to hold while cloning (all signals)
#          +8  sigset: the caller's mask, saved here
#          +16 u32 failing step code, +20 u32 errno (written by the child)
# step:    +0 syscall number, +8..+48 six arguments, +56 flags, +64 code
#          (72 bytes)
# flags:   1 = pass the previous step's result as the first argument
#          2 = ignore a failure of this step
#          4 = fail with ESRCH unless the result equals argument six
#
# ca_size == 0 selects clone(2) instead of clone3 (where clone3 is refused):
# flags|exit signal come from ca+0, the stack top from ca+40, and the address
# CLONE_PIDFD stores the pidfd at from ca+8; child_tid and tls are 0.
#
# Parent: returns the child's pid, or -errno from clone3 (or clone).
# Child: runs the steps in order, touching no stack and no libc. On the
# first failure it stores (code, errno) in the header, writes the same
# 8 bytes to errfd when errfd >= 0, and exits with status 127.
        .intel_syntax noprefix
        .text
        .globl  aunshare_spawn
aunshare_spawn:
        push    rbx
        push    rbp
        push    r12
        push    r13
        push    r14
        push    r15
        mov     rbx, rdi
        mov     rbp, rsi
        mov     r12, rdx
        mov     r13, rcx
        mov     r14, r8
        mov     r15, r9
        # Block every signal so nothing runs between clone and the plan.
        mov     eax, 14
        mov     edi, 2
        mov     rsi, r15
        lea     rdx, [r15+8]
        mov     r10d, 8
        syscall
        test    rbp, rbp
        jz      .Lclone
        mov     rdi, rbx
        mov     rsi, rbp
        mov     eax, 435
        syscall
        jmp     .Lcloned
.Lclone:
        mov     rdi, [rbx]
        mov     rsi, [rbx+40]
        mov     rdx, [rbx+8]
        xor     r10d, r10d
        xor     r8d, r8d
        mov     eax, 56
        syscall
.Lcloned:
        test    rax, rax
        jz      .Lchild
        # Parent (or clone3 failure): restore the caller's mask.
        mov     rbx, rax
        mov     eax, 14
        mov     edi, 2
        lea     rsi, [r15+8]
        xor     edx, edx
        mov     r10d, 8
        syscall
        mov     rax, rbx
        pop     r15
        pop     r14
        pop     r13
        pop     r12
        pop     rbp
        pop     rbx
        ret
.Lchild:
        xor     ebp, ebp
.Lloop:
        test    r13, r13
        jz      .Ldone
        mov     rax, [r12]
        mov     rdi, [r12+8]
        mov     rsi, [r12+16]
        mov     rdx, [r12+24]
        mov     r10, [r12+32]
        mov     r8, [r12+40]
        mov     r9, [r12+48]
        mov     rbx, [r12+56]
        test    bl, 1
        jz      .Lcall
        mov     rdi, rbp
.Lcall:
        syscall
        test    bl, 2
        jnz     .Lnext
        cmp     rax, -4095
        jae     .Lfail
        test    bl, 4
        jz      .Lnext
        cmp     rax, [r12+48]
        je      .Lnext
        mov     rax, -3
        jmp     .Lfail
.Lnext:
        mov     rbp, rax
        add     r12, 72
        dec     r13
        jmp     .Lloop
.Lfail:
        neg     eax
        mov     [r15+20], eax
        mov     eax, [r12+64]
        mov     [r15+16], eax
        test    r14, r14
        js      .Lexit
        mov     eax, 1
        mov     rdi, r14
        lea     rsi, [r15+16]
        mov     edx, 8
        syscall
.Lexit:
        mov     eax, 60
        mov     edi, 127
        syscall
        ud2
.Ldone:
        mov     eax, 60
        xor     edi, edi
        syscall
        ud2
