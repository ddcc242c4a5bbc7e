from image_queue.cli import main

if __name__ == "__main__":
    main()
