# The init for a new pid namespace, x86_64 (Linux): a whole static ELF,
# header included, so `as` + `objcopy -O binary -j .text` gives the file
# itself. Its bytes live in init.py; tests re-assemble this file and compare.
#
# argv: [name, report fd, report code, status fd, program path, program argv...]
#   report fd: decimal; where a failed exec of the program is reported as
#   the executor reports a failing step (u32 code, u32 errno; 8 bytes).
#   status fd: decimal; where the program's wait status (4 bytes, as wait4
#   gave it) is written once it has been reaped, just before the exit.
#   Anything not a number ("-"): no report, no status.
#
# pid 1 blocks every signal, starts the program with a vfork-like clone
# (it runs on this stack until it execs: it only makes syscalls and writes
# the record below the frame), then waits for signals: SIGCHLD reaps
# every exited child (orphans included); any other signal is forwarded to
# the program. When the program has been reaped, it writes the exact wait
# status on the status fd, then exits with the program's code, or 128+N
# when a signal N killed it (a namespace's init cannot die by a signal it
# sends itself): the parent reads the status, or falls back on the code.
        .intel_syntax noprefix
        .text
        .set    BASE, 0x400000
ehdr:
        .byte   0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0   # ELF, 64-bit, LSB, v1, SysV
        .zero   8
        .short  2                       # ET_EXEC
        .short  62                      # EM_X86_64
        .long   1
        .quad   BASE + _start - ehdr    # e_entry
        .quad   phdr - ehdr             # e_phoff
        .quad   0                       # e_shoff
        .long   0                       # e_flags
        .short  64, 56, 2               # e_ehsize, e_phentsize, e_phnum
        .short  0, 0, 0                 # no section headers
phdr:
        .long   1, 5                    # PT_LOAD, R+X
        .quad   0, BASE, BASE           # offset, vaddr, paddr
        .quad   end - ehdr, end - ehdr  # filesz, memsz
        .quad   0x10000
        .long   0x6474e551, 6           # PT_GNU_STACK, R+W (not executable)
        .quad   0, 0, 0, 0, 0, 16

# Frame (rsp): +0 every signal, +8 the mask to restore for the program,
# +16 failure record (code, errno), +24 wait status.
_start:
        mov     r12, [rsp]              # argc
        lea     r13, [rsp+8]            # argv
        lea     r14, [r13+r12*8+8]      # envp
        sub     rsp, 32
        mov     qword ptr [rsp], -1
        mov     r15, -1                 # report fd
        mov     rbx, -1                 # status fd
        xor     ebp, ebp                # report code
        cmp     r12, 5
        jb      .Lbad
        mov     rdi, [r13+8]
        call    number
        mov     r15, rax
        mov     rdi, [r13+16]
        call    number
        mov     ebp, eax
        mov     [rsp+16], eax
        mov     rdi, [r13+24]
        call    number
        mov     rbx, rax
        # Block everything: signals wait in the queue for sigtimedwait.
        mov     eax, 14                 # rt_sigprocmask(SIG_BLOCK, all, old)
        xor     edi, edi
        mov     rsi, rsp
        lea     rdx, [rsp+8]
        mov     r10d, 8
        syscall
        mov     eax, 56                 # clone(CLONE_VM|CLONE_VFORK|SIGCHLD, 0)
        mov     edi, 0x4111
        xor     esi, esi
        xor     edx, edx
        xor     r10d, r10d
        xor     r8d, r8d
        syscall
        test    rax, rax
        jz      .Lchild
        js      .Lfail                  # no child: report like a failed exec
        mov     r12, rax                # the program's pid
        mov     eax, 436                # close_range(0, 2, 0): the standard
        xor     edi, edi                # streams are the program's alone (a
        mov     esi, 2                  # reader sees EOF when it closes them)
        xor     edx, edx
        syscall
        test    r15, r15
        js      .Lwait
        mov     eax, 3                  # close(report fd): the child's copy
        mov     rdi, r15                # tells the parent (EOF at its exec)
        syscall
.Lwait:
        mov     eax, 128                # rt_sigtimedwait(all, NULL, NULL)
        mov     rdi, rsp
        xor     esi, esi
        xor     edx, edx
        mov     r10d, 8
        syscall
        test    rax, rax
        js      .Lwait
        cmp     eax, 17                 # SIGCHLD
        je      .Lreap
        mov     esi, eax                # kill(program, sig)
        mov     rdi, r12
        mov     eax, 62
        syscall
        jmp     .Lwait
.Lreap:
        mov     eax, 61                 # wait4(-1, &status, WNOHANG, NULL)
        mov     rdi, -1
        lea     rsi, [rsp+24]
        mov     edx, 1
        xor     r10d, r10d
        syscall
        test    rax, rax
        jle     .Lwait                  # none left that exited (or no child)
        cmp     rax, r12
        jne     .Lreap                  # an orphan: reaped, look for more
        test    rbx, rbx
        js      .Lcode
        mov     eax, 1                  # write(status fd, &status, 4)
        mov     rdi, rbx
        lea     rsi, [rsp+24]
        mov     edx, 4
        syscall
.Lcode:
        mov     eax, [rsp+24]
        mov     edi, eax
        and     edi, 0x7f
        jz      .Lexited
        add     edi, 128                # killed by signal N: 128+N
        jmp     .Lexit
.Lexited:
        movzx   edi, ah                 # the exit code
.Lexit:
        mov     eax, 231                # exit_group
        syscall
        ud2

# The program's side: the report fd closes at exec, the status fd now
# (the program never sees it), the mask is the one the plan set, then
# exec; on failure write (code, errno) and exit 127.
.Lchild:
        test    r15, r15
        js      .Lstatus
        mov     eax, 72                 # fcntl(report fd, F_SETFD, FD_CLOEXEC)
        mov     rdi, r15
        mov     esi, 2
        mov     edx, 1
        syscall
.Lstatus:
        test    rbx, rbx
        js      .Lmask
        mov     eax, 3                  # close(status fd): the init's own copy stays
        mov     rdi, rbx
        syscall
.Lmask:
        mov     eax, 14                 # rt_sigprocmask(SIG_SETMASK, old)
        mov     edi, 2
        lea     rsi, [rsp+8]
        xor     edx, edx
        mov     r10d, 8
        syscall
        mov     eax, 59                 # execve(path, argv + 5, envp)
        mov     rdi, [r13+32]
        lea     rsi, [r13+40]
        mov     rdx, r14
        syscall
.Lfail:
        neg     eax
        mov     [rsp+20], eax
        test    r15, r15
        js      .Lbad
        mov     eax, 1                  # write(report fd, record, 8)
        mov     rdi, r15
        lea     rsi, [rsp+16]
        mov     edx, 8
        syscall
.Lbad:
        mov     eax, 231                # exit_group(127)
        mov     edi, 127
        syscall
        ud2

# rax = the decimal number at rdi, or -1 when it does not start with a digit.
number:
        mov     rax, -1
        movzx   ecx, byte ptr [rdi]
        sub     ecx, 48
        cmp     ecx, 9
        ja      .Lnumber_done
        xor     eax, eax
.Lnumber_digit:
        movzx   ecx, byte ptr [rdi]
        sub     ecx, 48
        cmp     ecx, 9
        ja      .Lnumber_done
        imul    rax, rax, 10
        add     rax, rcx
        inc     rdi
        jmp     .Lnumber_digit
.Lnumber_done:
        ret
end:
