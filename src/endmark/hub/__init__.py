"""Models from the Hugging Face hub: `user/repo[:tag]` names, the cache, and downloads."""
