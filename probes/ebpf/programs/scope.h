/*
 * scope.h - what every program shares: which processes it traces, and the helpers they all use.
 *
 * Included by every programs/NAME.bpf.c before its own maps; probes/ebpf/loader.py inlines it, so what is
 * compiled (and what --print-bpf shows) is one text. probes/ebpf/scope.py (ScopedProbe) is its user side: it
 * fills mqi_tgids and gives the defines. In a program that combines several probes (probes/ebpf/combined.py)
 * it comes once, before their parts: they share one mqi_tgids. Nothing here may be one probe's alone.
 *
 * Maps:
 *   mqi_tgids     the tgids to trace, filled from user space (used when FILTER_TGIDS is 1); user space takes a
 *                 process out when it exits, so a new process reusing its pid is not traced. With
 *                 FOLLOW_CHILDREN the kernel adds each process a traced one starts, and takes it out as it exits
 *   mqi_followed  (FOLLOW_CHILDREN) child tgid -> the traced tgid that started it: the processes followed,
 *                 for user space to say which; never emptied by the kernel
 *
 * Defines (integers, rendered by probes/ebpf/loader.Parameters):
 *   FILTER_TGIDS  1 to trace only the processes in mqi_tgids, 0 for every process
 *   MAX_TGIDS     entries of mqi_tgids (and of each program's per-process maps)
 *   IGNORE_TGID   the tracer itself, left out when every process is traced: its own reads of /proc, faults
 *                 and mmaps are noise
 *   FOLLOW_CHILDREN  1 to trace the processes the traced ones start (fork, vfork, clone without
 *                 CLONE_THREAD), and theirs, from their first instruction (`trace ... -- COMMAND`)
 *   HAVE_NEWTASK, HAVE_PROCESS_EXIT  1 where the kernel has task:task_newtask, sched:sched_process_exit
 *   EXIT_HAS_GROUP_DEAD  1 where sched_process_exit says whether the whole process is gone (Linux >= 6.16)
 *   COMBINED_PROGRAM, FILTER_ANY_INODES  (probes/ebpf/combined.py only) several probes' handlers share one
 *                 event's answers (mqi_event); whether any of them filters files (store_files.h)
 */

BPF_HASH(mqi_tgids, u32, u8, MAX_TGIDS);
BPF_HASH(mqi_followed, u32, u32, MAX_TGIDS);

#if COMBINED_PROGRAM
/*
 * In a program that combines several probes, one event runs the handlers of each, and each asks whether the
 * running process is traced and (store_files.h) whether the file is the store's: the first handler asks
 * the map, the others get its answer. Kept per CPU for the one event a CPU runs (the kernel does not run a
 * tracepoint program inside another on one CPU); new_event() forgets the answers before the handlers run.
 */
struct event_answers {
    u32 tgid;
    u32 traced;           /* 0: not asked yet; else 1 + whether tgid is traced */
    u64 ino;
    u32 dev;
    u32 generation;       /* 0: not asked yet; else 1 + store_generation(dev, ino) */
};
BPF_PERCPU_ARRAY(mqi_event, struct event_answers, 1);

static __always_inline struct event_answers *event_answers(void)
{
    u32 zero = 0;
    return mqi_event.lookup(&zero);
}

static __always_inline void new_event(void)
{
#if FILTER_TGIDS || FILTER_ANY_INODES
    struct event_answers *answers = event_answers();
    if (answers) {
        answers->traced = 0;
        answers->generation = 0;
    }
#endif
}
#endif

/* Whether the process `tgid` is traced. */
static __always_inline int tgid_traced(u32 tgid)
{
#if FILTER_TGIDS
#if COMBINED_PROGRAM
    struct event_answers *answers = event_answers();
    if (answers && answers->traced && answers->tgid == tgid)
        return answers->traced - 1;
    int traced = mqi_tgids.lookup(&tgid) != NULL;
    if (answers) {
        answers->tgid = tgid;
        answers->traced = traced + 1;
    }
    return traced;
#else
    return mqi_tgids.lookup(&tgid) != NULL;
#endif
#else
    return tgid != 0 && tgid != IGNORE_TGID;
#endif
}

/* The pages of a folio of 2^order pages. */
static __always_inline u64 folio_pages(u32 order)
{
    return 1ULL << (order & 31);  /* the mask keeps the shift defined whatever the field holds */
}

/*
 * Following the traced processes' children (FOLLOW_CHILDREN): a shell script's commands, a JVM's forks.
 *   task:task_newtask (pid, clone_flags)  in the parent, inside copy_process(), before the child first runs:
 *                 a new process (not a thread: no CLONE_THREAD) of a traced one is traced from its start
 *   sched:sched_process_exit (pid, group_dead)  in the exiting thread: when the last thread of a followed
 *                 process exits it is taken out, so that a new process reusing its pid is not traced
 */
#define CLONE_THREAD_FLAG 0x00010000ULL

#if HAVE_NEWTASK
int mqi_child_new(struct tracepoint__task__task_newtask *args)
{
#if FILTER_TGIDS && FOLLOW_CHILDREN
    if (args->clone_flags & CLONE_THREAD_FLAG)
        return 0;
    u32 parent = bpf_get_current_pid_tgid() >> 32;
    if (!mqi_tgids.lookup(&parent))
        return 0;
    u32 child = args->pid;
    u8 one = 1;
    if (mqi_tgids.update(&child, &one) == 0)
        mqi_followed.update(&child, &parent);
#endif
    return 0;
}
#endif

#if HAVE_PROCESS_EXIT
int mqi_child_exit(struct tracepoint__sched__sched_process_exit *args)
{
#if FILTER_TGIDS && FOLLOW_CHILDREN
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
#if EXIT_HAS_GROUP_DEAD
    if (!args->group_dead)
        return 0;
#else
    if ((u32)id != tgid)  /* without group_dead: the main thread's exit stands for the process's */
        return 0;
#endif
    if (mqi_followed.lookup(&tgid))
        mqi_tgids.delete(&tgid);
#endif
    return 0;
}
#endif
