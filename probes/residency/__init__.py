"""Page-cache residency of files: cachestat(2) where the kernel has it, mincore(2) page maps otherwise."""
