SELECT bench_claim(500);
