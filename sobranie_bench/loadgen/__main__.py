from sobranie_bench.loadgen import main

main()
