from weightzip.cli import main

main()
