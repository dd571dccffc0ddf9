/*
 * store_files.h - which files are the store's (--store), from the moment each one is created.
 *
 * Included by pagecache.bpf.c, writeback.bpf.c and faults.bpf.c; probes/ebpf/loader.py inlines it, so what is
 * compiled (and what --print-bpf shows) is one text. probes/ebpf/scope.py (StoreFollower) is its user side. In
 * a program that combines several probes (probes/ebpf/combined.py) it comes once, shared by them (one
 * StoreFollower), and its two handlers run once per inode created or freed.
 *
 * mqi_inodes holds the store's files, each with a generation: LISTED_GENERATION for a file user space found
 * when it listed the store (at the start, and at the end of every interval), else a value taken when the
 * kernel created the file. The generation tells apart two files that had the same inode number within one
 * interval: a segment that retention deleted, and the next one a roll created with its freed number.
 *
 * With FOLLOW_CREATION (the store is on ext4, whose inode tracepoints this kernel has):
 *   ext4:ext4_allocate_inode (dev, ino, dir, mode)  mqi_store_new: a regular file created in a store directory
 *                          is the store's from its inode's allocation, before its first page, so a new
 *                          segment's warm-up is counted in the interval it happens in; a directory created in
 *                          consumequeue/ or in a topic directory becomes a store directory in turn. Any other
 *                          allocation takes the number out of mqi_inodes: whatever had it before is gone.
 *   ext4:ext4_free_inode (dev, ino, mode)  mqi_store_gone: the file (or directory) is gone, after the kernel
 *                          removed its pages from the page cache (those removals are still counted).
 * Both run in whichever task creates or frees an inode on any ext4 filesystem: a few map operations per file
 * created or deleted on the machine, none per page.
 * Without FOLLOW_CREATION (another filesystem, an older kernel) a new file is added by user space when it lists
 * the store: its events are counted from the end of the interval it appeared in, and the probe says so.
 *
 * The store's directories (filled by user space from its listing, extended here as directories are created):
 *   mqi_store_dirs   whose regular files are the store's: commitlog/, index/, consumequeue/TOPIC/QUEUE/
 *   mqi_topic_dirs   whose subdirectories are store directories: consumequeue/TOPIC/
 *   mqi_queue_roots  whose subdirectories are topic directories: consumequeue/
 *
 * Bounds: MAX_INODES store files, MAX_STORE_DIRS directories in each of the first two sets. A file created
 * while mqi_inodes is full is counted in mqi_store_lost (user space reports it) and is followed from the next
 * listing on.
 */

#define LISTED_GENERATION 1
#define MODE_TYPE 0170000
#define MODE_DIRECTORY 0040000
#define MODE_REGULAR 0100000

struct inode_key {
    u64 ino;
    u32 dev;
    u32 pad;
};

struct store_follow_totals {
    u64 files_not_followed;    /* store files created while mqi_inodes was full */
};

BPF_HASH(mqi_inodes, struct inode_key, u32, MAX_INODES);
BPF_HASH(mqi_store_dirs, struct inode_key, u8, MAX_STORE_DIRS);
BPF_HASH(mqi_topic_dirs, struct inode_key, u8, MAX_STORE_DIRS);
BPF_HASH(mqi_queue_roots, struct inode_key, u8, 64);
BPF_ARRAY(mqi_store_lost, struct store_follow_totals, 1);

/* The generation of the store's file (dev, ino); 0 when it is not one of the store's files. */
static __always_inline u32 store_generation(u32 dev, u64 ino)
{
    struct inode_key key = {.ino = ino, .dev = dev};
#if COMBINED_PROGRAM
    struct event_answers *answers = event_answers();  /* scope.h: another probe may have asked already */
    if (answers && answers->generation && answers->ino == ino && answers->dev == dev)
        return answers->generation - 1;
    u32 *found = mqi_inodes.lookup(&key);
    u32 generation = found ? *found : 0;
    if (answers) {
        answers->ino = ino;
        answers->dev = dev;
        answers->generation = generation + 1;
    }
    return generation;
#else
    u32 *generation = mqi_inodes.lookup(&key);
    return generation ? *generation : 0;
#endif
}

#if HAVE_EXT4_ALLOC
int mqi_store_new(struct tracepoint__ext4__ext4_allocate_inode *args)
{
#if FOLLOW_CREATION
    struct inode_key parent = {.ino = args->dir, .dev = args->dev};
    struct inode_key created = {.ino = args->ino, .dev = args->dev};
    u32 type = args->mode & MODE_TYPE;
    if (type == MODE_REGULAR && mqi_store_dirs.lookup(&parent)) {
        /* the microsecond of its creation (in steps of 2 us, wrapping every 73 minutes), never 0 or LISTED */
        u32 generation = (u32)(bpf_ktime_get_ns() >> 10) | 2;
        if (mqi_inodes.update(&created, &generation)) {
            u32 zero = 0;
            struct store_follow_totals *lost = mqi_store_lost.lookup(&zero);
            if (lost)
                __sync_fetch_and_add(&lost->files_not_followed, 1);
        }
        return 0;
    }
    mqi_inodes.delete(&created);
    if (type != MODE_DIRECTORY)
        return 0;
    u8 one = 1;
    if (mqi_topic_dirs.lookup(&parent))
        mqi_store_dirs.update(&created, &one);
    else if (mqi_queue_roots.lookup(&parent))
        mqi_topic_dirs.update(&created, &one);
#endif
    return 0;
}
#endif

#if HAVE_EXT4_FREE
int mqi_store_gone(struct tracepoint__ext4__ext4_free_inode *args)
{
#if FOLLOW_CREATION
    struct inode_key gone = {.ino = args->ino, .dev = args->dev};
    if ((args->mode & MODE_TYPE) == MODE_DIRECTORY) {
        mqi_store_dirs.delete(&gone);
        mqi_topic_dirs.delete(&gone);
        return 0;
    }
    mqi_inodes.delete(&gone);
#endif
    return 0;
}
#endif
