/*
 * pagecache.bpf.c - pages entering the page cache (misses) and leaving it (evictions), and the readahead
 * that brings them in: per process, per file and, for the store's files, per folio.
 *
 * Loaded by probes/ebpf/pagecache.py through bcc. Every parameter arrives as an integer -D define (below);
 * the sets of processes and files arrive as entries of hash maps. Nothing else varies. Tracepoint fields
 * are read by name (args->field: bcc builds each struct from the event's format file).
 *
 * Tracepoints, and why each one:
 *   filemap:mm_filemap_add_to_page_cache      (s_dev, i_ino, index, order) a folio of 2^order pages
 *                          entered the page cache: a read or fault that missed (through readahead), or a
 *                          write or fault creating a page. Counted in pages, not events: with large folios
 *                          one event brings in up to 512 pages. It runs in the task whose access needed
 *                          the page, so it is filtered by process.
 *   filemap:mm_filemap_delete_from_page_cache (same fields) a folio left the page cache: reclaim (kswapd,
 *                          or an allocating task in direct reclaim), fadvise DONTNEED, truncation,
 *                          invalidation. It runs in whoever removed the folio, not in the task that read
 *                          it, so removals are never filtered by process: they are counted for the files
 *                          in view (below), under the process that removed them.
 *   readahead:page_cache_sync_ra   (optional) a read missed the cache and readahead starts: a sync request.
 *   readahead:page_cache_async_ra  (optional) a read reached the PG_readahead mark of the last window: the
 *                          next window is read ahead of the reader, an async request.
 *   readahead:page_cache_ra_order  (optional; index, size) the window readahead decided to read: `size`
 *                          pages from `index` (also for mmap read-around, which has no request event).
 *   readahead:page_cache_ra_unbounded (optional; index, nr_to_read) a window read folio by folio: forced
 *                          readahead (fadvise/madvise WILLNEED, random-access files, small random reads), or
 *                          ra_order falling back (no large folios, or part of the window already cached).
 *                          A fallback reports again pages of the window ra_order just counted: it is
 *                          recognised (same thread and file, inside that window, mqi_ra_windows) and not
 *                          counted twice.
 *   filemap:mm_filemap_get_pages  (optional; s_dev, i_ino, index, last_index) the read path (read, pread,
 *                          readv, sendfile, splice: filemap_read and filemap_splice_read) found pages
 *                          [index, last_index] of the file in the page cache, after reading in the missing
 *                          ones: the page-cache lookups, for cachetop's hits and misses (mqi_pc_lookup below).
 *                          Reads through mmap make no such event (a load from a mapped page makes none at
 *                          all): they are not counted here.
 *   Window pages are what readahead asked for: pages past the end of the file or already cached are in the
 *   window but not read. The readahead handlers exist only where the kernel has the tracepoint (HAVE_*).
 *   ext4:ext4_allocate_inode, ext4:ext4_free_inode  (optional) the store's files from their creation:
 *                          store_files.h.
 *
 * Files in view: with FILTER_INODES the store's files (mqi_inodes, followed from their creation:
 * store_files.h); else with FILTER_TGIDS the files the traced processes added pages to or read during the
 * session (mqi_seen_inodes, filled here); else every file. Files are counted under their generation (store_files.h),
 * so that two files that had the same inode number within one interval (a segment retention deleted, and the
 * next one created with its number) are told apart.
 *
 * Maps (tgid = process id, tid = thread id):
 *   mqi_tgids        the tgids to trace (scope.h: tgid_traced() asks it when FILTER_TGIDS is 1)
 *   mqi_inodes       the store's files and their generations (when FILTER_INODES is 1), and the sets of the
 *                    store's directories: store_files.h
 *   mqi_seen_inodes  files the traced processes added pages to or read (when only FILTER_TGIDS is 1)
 *   mqi_totals       one struct cache_totals, cumulative: user space takes differences, so no event is lost
 *                    between reads
 *   mqi_processes    per tgid: pages added (traced tasks) and removed (any task, files in view), and the
 *                    process name; drained
 *   mqi_files        per (inode, device, generation) in view; drained by user space every interval
 *   mqi_folios       per (inode, device, generation, index, order): additions and removals of each folio of
 *                    the files in view, for page ranges (only when RECORD_FOLIOS is 1); drained
 *   The drained maps are each two halves, NAME_0 and NAME_1 (halves.h): handlers write the half mqi_half
 *   names while user space empties the other, so no event is lost at an interval's end.
 *   mqi_ra_windows   per thread: the last window ra_order reported, to recognise its fallback (LRU)
 *   mqi_reads        per thread: its last read-path lookup and the pages it added since, to tell the
 *                    lookup's misses from its hits (LRU)
 *
 * Defines (all integers, rendered by probes/ebpf/loader.Parameters):
 *   FILTER_TGIDS, FILTER_INODES  1 to restrict to the sets above, 0 for every process / file
 *   RECORD_FOLIOS                1 to record each folio of the files in view (page ranges)
 *   MAX_TGIDS, MAX_INODES, MAX_FOLIOS, MAX_THREADS, MAX_STORE_DIRS  map sizes
 *   FOLLOW_CREATION, HAVE_EXT4_ALLOC, HAVE_EXT4_FREE  how the store's files are followed (store_files.h)
 *   IGNORE_TGID                  the tracer itself, left out when every process is traced
 *   HAVE_RA_SYNC, HAVE_RA_ASYNC, HAVE_RA_ORDER, HAVE_RA_UNBOUNDED, HAVE_GET_PAGES  1 where the kernel has
 *                                the tracepoint
 */

struct cache_totals {
    u64 added_folios;          /* by the traced processes, every file */
    u64 added_pages;
    u64 deleted_folios;        /* of the files in view, by any process */
    u64 deleted_pages;
    u64 deleted_pages_all;     /* of every file, by any process */
    u64 sync_readahead;        /* by the traced processes, every file */
    u64 async_readahead;
    u64 readahead_windows;
    u64 readahead_pages;
    u64 lost_records;          /* records that found mqi_processes, mqi_files or mqi_folios full */
    u64 lookup_pages;          /* read-path lookups by the traced processes, files in view (HAVE_GET_PAGES) */
    u64 lookup_missed_pages;   /* of those, pages the lookup's own read added to the cache */
};

struct cache_counts {
    u64 added_folios;
    u64 added_pages;
    u64 deleted_folios;
    u64 deleted_pages;
    u64 sync_readahead;
    u64 async_readahead;
    u64 readahead_windows;
    u64 readahead_pages;
    u32 last_tgid;             /* a traced process that used the file, for user space to name it */
    u32 pad;
    u64 lookup_pages;          /* read-path lookups (mm_filemap_get_pages), files in view */
    u64 lookup_missed_pages;   /* of those, pages the same read added to the cache */
};

struct process_counts {
    struct cache_counts counts;
    char comm[16];             /* the name of the process when it was first seen this interval */
};

#include "scope.h"
#include "store_files.h"
#include "halves.h"

struct file_key {
    u64 ino;
    u32 dev;
    u32 generation;            /* store_files.h; LISTED_GENERATION without FILTER_INODES */
};

struct folio_key {
    u64 ino;
    u64 index;
    u32 dev;
    u32 order;
    u32 generation;
    u32 pad;
};

struct folio_counts {
    u64 added;
    u64 deleted;
};

struct ra_window {
    u64 ino;
    u64 start;
    u64 end;                   /* exclusive */
    u32 dev;
    u32 pad;
};

BPF_HASH(mqi_seen_inodes, struct inode_key, u8, MAX_INODES);
BPF_ARRAY(mqi_totals, struct cache_totals, 1);
BPF_F_TABLE("hash", u32, struct process_counts, mqi_processes_0, MAX_TGIDS, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", u32, struct process_counts, mqi_processes_1, MAX_TGIDS, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct file_key, struct cache_counts, mqi_files_0, MAX_INODES, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct file_key, struct cache_counts, mqi_files_1, MAX_INODES, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct folio_key, struct folio_counts, mqi_folios_0, MAX_FOLIOS, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct folio_key, struct folio_counts, mqi_folios_1, MAX_FOLIOS, BPF_F_NO_PREALLOC);
BPF_TABLE("lru_hash", u32, struct ra_window, mqi_ra_windows, MAX_THREADS);

/* A thread's last read-path lookup, and the pages it added to the cache since (a read adds the pages it
   missed before its lookup event: readahead or a new folio). Only the thread itself writes its entry. */
struct read_track {
    u64 ino;                   /* the last lookup: file and pages [first, last] */
    u64 first;
    u64 last;
    u64 added_ino;             /* pages added since: [added_first, added_end) of one file, added_pages in all */
    u64 added_first;
    u64 added_end;
    u64 added_pages;
    u32 dev;
    u32 added_dev;
};

BPF_TABLE("lru_hash", u32, struct read_track, mqi_reads, MAX_THREADS);

static __always_inline void track_added(u32 dev, u64 ino, u64 index, u64 pages);

/* The generation an addition by a traced process is recorded under, per file (the addition makes the file
   one in view); 0: not recorded. */
static __always_inline u32 added_in_view(u32 dev, u64 ino)
{
#if FILTER_INODES
    return store_generation(dev, ino);
#else
#if FILTER_TGIDS
    struct inode_key file = {.ino = ino, .dev = dev};
    u8 one = 1;
    if (!mqi_seen_inodes.lookup(&file))  /* an update per page-cache lookup would cost a lock each time */
        mqi_seen_inodes.update(&file, &one);
#endif
    return LISTED_GENERATION;
#endif
}

/* The generation a removal (by anyone) is recorded under; 0: not a file in view. */
static __always_inline u32 removed_in_view(u32 dev, u64 ino)
{
#if FILTER_INODES
    return store_generation(dev, ino);
#elif FILTER_TGIDS
    struct inode_key file = {.ino = ino, .dev = dev};
    return mqi_seen_inodes.lookup(&file) ? LISTED_GENERATION : 0;
#else
    return LISTED_GENERATION;
#endif
}

static __always_inline struct cache_totals *totals_of_session(void)
{
    u32 zero = 0;
    return mqi_totals.lookup(&zero);
}

/* The running process's counters: its name is kept, as short-lived readers are gone when user space looks. */
static __always_inline struct cache_counts *process_of(u32 tgid, struct cache_totals *totals)
{
    struct process_counts zero = {};
    struct process_counts *process;
    if (writing_half())
        process = mqi_processes_1.lookup_or_try_init(&tgid, &zero);
    else
        process = mqi_processes_0.lookup_or_try_init(&tgid, &zero);
    if (!process) {
        __sync_fetch_and_add(&totals->lost_records, 1);
        return NULL;
    }
    if (!process->comm[0])
        bpf_get_current_comm(&process->comm, sizeof(process->comm));
    return &process->counts;
}

static __always_inline struct cache_counts *file_of(struct file_key *file, struct cache_totals *totals)
{
    struct cache_counts zero = {};
    struct cache_counts *counts;
    if (writing_half())
        counts = mqi_files_1.lookup_or_try_init(file, &zero);
    else
        counts = mqi_files_0.lookup_or_try_init(file, &zero);
    if (!counts)
        __sync_fetch_and_add(&totals->lost_records, 1);
    return counts;
}

static __always_inline void record_folio(struct file_key *file, u64 index, u32 order, int added,
                                         struct cache_totals *totals)
{
#if RECORD_FOLIOS
    struct folio_key key = {.ino = file->ino, .index = index, .dev = file->dev, .order = order,
                            .generation = file->generation};
    struct folio_counts zero = {};
    struct folio_counts *counts;
    if (writing_half())
        counts = mqi_folios_1.lookup_or_try_init(&key, &zero);
    else
        counts = mqi_folios_0.lookup_or_try_init(&key, &zero);
    if (!counts) {
        __sync_fetch_and_add(&totals->lost_records, 1);
        return;
    }
    __sync_fetch_and_add(added ? &counts->added : &counts->deleted, 1);
#endif
}

static __always_inline void count_added(struct cache_counts *counts, u64 pages)
{
    __sync_fetch_and_add(&counts->added_folios, 1);
    __sync_fetch_and_add(&counts->added_pages, pages);
}

static __always_inline void count_deleted(struct cache_counts *counts, u64 pages)
{
    __sync_fetch_and_add(&counts->deleted_folios, 1);
    __sync_fetch_and_add(&counts->deleted_pages, pages);
}

int mqi_pc_added(struct tracepoint__filemap__mm_filemap_add_to_page_cache *args)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (!tgid_traced(tgid))
        return 0;
    struct cache_totals *totals = totals_of_session();
    if (!totals)
        return 0;
    u32 order = args->order;
    u64 pages = folio_pages(order);
    __sync_fetch_and_add(&totals->added_folios, 1);
    __sync_fetch_and_add(&totals->added_pages, pages);
    struct cache_counts *process = process_of(tgid, totals);
    if (process)
        count_added(process, pages);
    track_added(args->s_dev, args->i_ino, args->index, pages);

    struct file_key file = {.ino = args->i_ino, .dev = args->s_dev};
    file.generation = added_in_view(file.dev, file.ino);
    if (!file.generation)
        return 0;
    struct cache_counts *counts = file_of(&file, totals);
    if (counts) {
        count_added(counts, pages);
        counts->last_tgid = tgid;
    }
    record_folio(&file, args->index, order, 1, totals);
    return 0;
}

int mqi_pc_deleted(struct tracepoint__filemap__mm_filemap_delete_from_page_cache *args)
{
    struct cache_totals *totals = totals_of_session();
    if (!totals)
        return 0;
    u32 order = args->order;
    u64 pages = folio_pages(order);
    __sync_fetch_and_add(&totals->deleted_pages_all, pages);
    struct file_key file = {.ino = args->i_ino, .dev = args->s_dev};
    file.generation = removed_in_view(file.dev, file.ino);
    if (!file.generation)
        return 0;
    __sync_fetch_and_add(&totals->deleted_folios, 1);
    __sync_fetch_and_add(&totals->deleted_pages, pages);
    struct cache_counts *process = process_of(bpf_get_current_pid_tgid() >> 32, totals);
    if (process)
        count_deleted(process, pages);
    struct cache_counts *counts = file_of(&file, totals);
    if (counts)
        count_deleted(counts, pages);
    record_folio(&file, args->index, order, 0, totals);
    return 0;
}

/* --- readahead --------------------------------------------------------------------------------------- */

enum readahead_kind { SYNC_REQUEST, ASYNC_REQUEST, WINDOW };

static __always_inline void count_readahead_in(struct cache_counts *counts, int kind, u64 pages)
{
    if (kind == SYNC_REQUEST)
        __sync_fetch_and_add(&counts->sync_readahead, 1);
    else if (kind == ASYNC_REQUEST)
        __sync_fetch_and_add(&counts->async_readahead, 1);
    else {
        __sync_fetch_and_add(&counts->readahead_windows, 1);
        __sync_fetch_and_add(&counts->readahead_pages, pages);
    }
}

static __always_inline void count_readahead(u32 tgid, u32 dev, u64 ino, int kind, u64 pages)
{
    struct cache_totals *totals = totals_of_session();
    if (!totals)
        return;
    if (kind == SYNC_REQUEST)
        __sync_fetch_and_add(&totals->sync_readahead, 1);
    else if (kind == ASYNC_REQUEST)
        __sync_fetch_and_add(&totals->async_readahead, 1);
    else {
        __sync_fetch_and_add(&totals->readahead_windows, 1);
        __sync_fetch_and_add(&totals->readahead_pages, pages);
    }
    struct cache_counts *process = process_of(tgid, totals);
    if (process)
        count_readahead_in(process, kind, pages);
    struct file_key file = {.ino = ino, .dev = dev, .generation = LISTED_GENERATION};
#if FILTER_INODES
    file.generation = store_generation(dev, ino);
    if (!file.generation)
        return;
#endif
    struct cache_counts *counts = file_of(&file, totals);
    if (counts) {
        count_readahead_in(counts, kind, pages);
        counts->last_tgid = tgid;
    }
}

/* A request starts a new decision: a window ra_order reported before it cannot be falling back now. */
static __always_inline int on_request(u32 dev, u64 ino, int kind)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    if (!tgid_traced(tgid))
        return 0;
    mqi_ra_windows.delete(&tid);
    count_readahead(tgid, dev, ino, kind, 0);
    return 0;
}

#if HAVE_RA_SYNC
int mqi_ra_sync(struct tracepoint__readahead__page_cache_sync_ra *args)
{
    return on_request(args->s_dev, args->i_ino, SYNC_REQUEST);
}
#endif

#if HAVE_RA_ASYNC
int mqi_ra_async(struct tracepoint__readahead__page_cache_async_ra *args)
{
    return on_request(args->s_dev, args->i_ino, ASYNC_REQUEST);
}
#endif

#if HAVE_RA_ORDER
int mqi_ra_order(struct tracepoint__readahead__page_cache_ra_order *args)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    if (!tgid_traced(tgid))
        return 0;
    u64 start = args->index, pages = args->size;
    struct ra_window window = {.ino = args->i_ino, .start = start, .end = start + pages, .dev = args->s_dev};
    mqi_ra_windows.update(&tid, &window);
    count_readahead(tgid, window.dev, window.ino, WINDOW, pages);
    return 0;
}
#endif

#if HAVE_RA_UNBOUNDED
int mqi_ra_unbound(struct tracepoint__readahead__page_cache_ra_unbounded *args)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    if (!tgid_traced(tgid))
        return 0;
    u32 dev = args->s_dev;
    u64 ino = args->i_ino, start = args->index, pages = args->nr_to_read;
    struct ra_window *window = mqi_ra_windows.lookup(&tid);
    if (window && window->dev == dev && window->ino == ino && start >= window->start &&
        start + pages <= window->end) {
        mqi_ra_windows.delete(&tid);  /* ra_order's fallback: that window is counted already */
        return 0;
    }
    count_readahead(tgid, dev, ino, WINDOW, pages);
    return 0;
}
#endif

/* --- read-path lookups: hits and misses ----------------------------------------------------------------- */

/* The folio a traced thread just added, kept until its next lookup tells whether the read asked for it. */
static __always_inline void track_added(u32 dev, u64 ino, u64 index, u64 pages)
{
#if HAVE_GET_PAGES
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct read_track zero = {};
    struct read_track *track = mqi_reads.lookup_or_try_init(&tid, &zero);
    if (!track)
        return;
    if (!track->added_pages || track->added_dev != dev || track->added_ino != ino) {
        track->added_dev = dev;
        track->added_ino = ino;
        track->added_first = index;
        track->added_end = index + pages;
        track->added_pages = pages;
        return;
    }
    if (index < track->added_first)
        track->added_first = index;
    if (index + pages > track->added_end)
        track->added_end = index + pages;
    track->added_pages += pages;
#endif
}

#if HAVE_GET_PAGES
/* Of pages [first, last], how many the thread added since its last lookup: the pages it added overlap the
   range by at most `overlap`, and there were `added_pages` of them (readahead adds one run of pages, so the
   two bounds agree; a thread that also added pages elsewhere in the file gets the smaller). */
static __always_inline u64 missed_in(struct read_track *track, u32 dev, u64 ino, u64 first, u64 last)
{
    if (!track->added_pages || track->added_dev != dev || track->added_ino != ino)
        return 0;
    u64 start = track->added_first > first ? track->added_first : first;
    u64 end = track->added_end < last + 1 ? track->added_end : last + 1;
    if (end <= start)
        return 0;
    u64 overlap = end - start;
    return overlap < track->added_pages ? overlap : track->added_pages;
}

static __always_inline void count_lookup(struct cache_counts *counts, u64 pages, u64 missed)
{
    __sync_fetch_and_add(&counts->lookup_pages, pages);
    __sync_fetch_and_add(&counts->lookup_missed_pages, missed);
}

/* The fewest folios a batch of filemap_get_pages() holds when it is full (PAGEVEC_SIZE: 15 before Linux 6.5,
   31 since), so a read that goes on after a full batch starts at least this many pages after the last one. */
#define FULL_BATCH_PAGES 15

/*
 * Whether the lookup of [first, last] is the rest of the thread's previous one: the same read, after a batch
 * that did not reach its end. It has the same end and starts inside the previous range. A new read can have
 * that too (small records read one by one: the next one starts and ends in the page where the previous one
 * ended), so when it starts in the previous range's last page it counts as the rest only where the previous
 * batch must have stopped short: it was full, or a page of the rest had to be read in (`missed`). A rest that
 * follows a batch stopped at a page another task is reading in is counted again (one page).
 */
static __always_inline int continues_lookup(struct read_track *track, u32 dev, u64 ino, u64 first, u64 last,
                                            u64 missed)
{
    if (track->dev != dev || track->ino != ino || track->last != last || first <= track->first ||
        first > track->last)
        return 0;
    return first < track->last || first - track->first >= FULL_BATCH_PAGES || missed;
}

/* The thread's lookup of pages [first, last]: how many of them to count (0 for the rest of the previous one),
   and how many it missed; the thread's entry then holds this lookup, and no page added since. */
static __always_inline u64 lookup_in(u32 tid, u32 dev, u64 ino, u64 first, u64 last, u64 *missed)
{
    struct read_track zero = {};
    struct read_track *track = mqi_reads.lookup_or_try_init(&tid, &zero);
    if (!track)
        return last - first + 1;
    *missed = missed_in(track, dev, ino, first, last);
    int continuation = continues_lookup(track, dev, ino, first, last, *missed);
    track->dev = dev;
    track->ino = ino;
    track->first = first;
    track->last = last;
    track->added_pages = 0;
    return continuation ? 0 : last - first + 1;
}

/*
 * One call of filemap_get_pages(): the read found pages [index, last_index] in the cache. The range is what
 * the read asked for from its position on; a read longer than one batch of folios calls it again for the rest
 * (continues_lookup): that adds no lookups, only the misses it read in.
 * Misses: the pages of the range this thread added since its last lookup. Hits: lookups - misses.
 */
int mqi_pc_lookup(struct tracepoint__filemap__mm_filemap_get_pages *args)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (!tgid_traced(tgid) || args->last_index < args->index)
        return 0;
    struct file_key file = {.ino = args->i_ino, .dev = args->s_dev};
    u64 missed = 0, pages = lookup_in((u32)id, file.dev, file.ino, args->index, args->last_index, &missed);
    file.generation = added_in_view(file.dev, file.ino);
    struct cache_totals *totals = totals_of_session();
    if (!file.generation || !totals)
        return 0;
    __sync_fetch_and_add(&totals->lookup_pages, pages);
    __sync_fetch_and_add(&totals->lookup_missed_pages, missed);
    struct cache_counts *process = process_of(tgid, totals);
    if (process)
        count_lookup(process, pages, missed);
    struct cache_counts *counts = file_of(&file, totals);
    if (counts) {
        count_lookup(counts, pages, missed);
        counts->last_tgid = tgid;
    }
    return 0;
}
#endif
