// procmig_park_save(ThreadParkContext* ctx): saves the callee-saved registers, the stack pointer
// the caller will have after this call returns, and the return address (the resume point) into
// ctx, and returns 0. A restorer that loads these registers, sets rax to its argument block's
// address and jumps to the saved rip makes the call "return again" with that non-zero value
// (setjmp-like, but without glibc's pointer mangling, so the values are meaningful in another
// process). Offsets match ThreadParkContext (source.h):
// tid u32 at 0, then rbx 8, rbp 16, r12 24, r13 32, r14 40, r15 48, rsp 56, rip 64.
        .text
        .globl  procmig_park_save
        .hidden procmig_park_save
        .type   procmig_park_save, @function
procmig_park_save:
        .cfi_startproc
        movq    %rbx, 8(%rdi)
        movq    %rbp, 16(%rdi)
        movq    %r12, 24(%rdi)
        movq    %r13, 32(%rdi)
        movq    %r14, 40(%rdi)
        movq    %r15, 48(%rdi)
        leaq    8(%rsp), %rax
        movq    %rax, 56(%rdi)
        movq    (%rsp), %rax
        movq    %rax, 64(%rdi)
        xorl    %eax, %eax
        ret
        .cfi_endproc
        .size   procmig_park_save, .-procmig_park_save
        .section .note.GNU-stack,"",@progbits
